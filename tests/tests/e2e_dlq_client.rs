//! End to end: the client crate's dead-letter handle against two servers on one Redis:
//! publishing with a key is idempotent, the list stream walks every entry once, and
//! consumers on both servers handle every entry exactly once, a failing handler's entry
//! coming back with a higher delivery count.
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use floodgate_client::{
    Client,
    dead_letters::{Filter, Message},
};
use floodgate_tests::{e2e_support::Fleet, unique_namespace};
use futures::StreamExt;

const CONFIG: &str = "[queues.orders]\nvisibility_timeout = \"2s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_publish_list_and_consume() {
    let fleet = Fleet::on_redis(2, CONFIG).await;
    let urls = fleet.urls();
    let ns = unique_namespace("dlqc");
    let a = Client::connect(&urls[0])
        .await
        .unwrap()
        .dead_letters(&ns, "orders");
    let b = Client::connect(&urls[1])
        .await
        .unwrap()
        .dead_letters(&ns, "orders");

    let first = a
        .publish(Message::new(b"x".to_vec()).reason("r").idempotency_key("k"))
        .await
        .unwrap();
    let again = b
        .publish(Message::new(b"x".to_vec()).reason("r").idempotency_key("k"))
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(first.id, again.id);
    for i in 0..59u32 {
        a.publish(
            Message::new(i.to_be_bytes().to_vec()).reason(if i % 2 == 0 { "even" } else { "odd" }),
        )
        .await
        .unwrap();
    }
    let all: Vec<_> = a.list(Filter::all()).collect().await;
    let ids: Vec<String> = all.into_iter().map(|r| r.unwrap().id).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), distinct.len()), (60, 60));

    // Two consumers, one per server; the entry with payload [0,0,0,3] fails once.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failed_once = Arc::new(Mutex::new(false));
    let run = |q: floodgate_client::DeadLetterQueue, name: &'static str| {
        let seen = seen.clone();
        let failed_once = failed_once.clone();
        async move {
            q.consumer(name)
                .batch_size(5)
                .idle_backoff(Duration::from_millis(20), Duration::from_millis(100))
                .run(
                    move |d| {
                        let seen = seen.clone();
                        let failed_once = failed_once.clone();
                        async move {
                            if d.payload == [0, 0, 0, 3]
                                && !std::mem::replace(&mut *failed_once.lock().unwrap(), true)
                            {
                                return Err("first try fails");
                            }
                            seen.lock().unwrap().push((d.id.clone(), d.delivery_count));
                            Ok(())
                        }
                    },
                    tokio::time::sleep(Duration::from_secs(3)),
                )
                .await
                .unwrap()
        }
    };
    let (ra, rb) = tokio::join!(run(a.clone(), "a"), run(b.clone(), "b"));
    let seen = seen.lock().unwrap().clone();
    let handled: HashSet<&String> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(
        (seen.len(), handled.len()),
        (60, 60),
        "every entry handled exactly once"
    );
    assert_eq!(ra.nacked + rb.nacked, 1);
    assert!(
        seen.iter().any(|(_, dc)| *dc == 2),
        "the nacked entry came back"
    );
    assert_eq!(a.stats().await.unwrap().count, 0);
}
