//! `floodgate token new`: makes a 256-bit random token and prints it once, with the
//! `[[tokens]]` table (its SHA-256, never the token) to paste into the server's config.
use std::{process::ExitCode, time::SystemTime};

use crate::auth::{
    Tokens,
    token::{TokenTable, generate},
};

/// Arguments of `floodgate token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it with its configuration table.
    New(NewArgs),
}

/// Arguments of `floodgate token new`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The token is printed once; the server stores only its SHA-256. Paste the printed
[[tokens]] table into the server's configuration file (it reloads by itself).

Example:
  floodgate token new --name shop-api --namespaces shop,shop.* --role app --expires 90d --rate 1000/s")]
pub struct NewArgs {
    /// Who holds the token (1-64 of [A-Za-z0-9_.-]); named in logs, audit and refusals.
    #[arg(long)]
    pub name: String,
    /// Namespaces it may use, comma-separated: exact names, prefixes such as `team-a.*`,
    /// or `*` for all.
    #[arg(long, value_delimiter = ',', required = true)]
    pub namespaces: Vec<String>,
    /// `app`, `worker`, `operator` or `admin` (README "Security" lists what each may call).
    #[arg(long)]
    pub role: String,
    /// When it stops working: a duration from now ("90d") or an RFC 3339 time.
    #[arg(long)]
    pub expires: Option<String>,
    /// Its own request rate, e.g. "1000/s" (s, m or h); unlimited without it.
    #[arg(long)]
    pub rate: Option<String>,
}

/// An RFC 3339 expiry from a duration ("90d") or an RFC 3339 time.
fn expiry(s: &str) -> anyhow::Result<String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(humantime::format_rfc3339_seconds(SystemTime::now() + d).to_string());
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        anyhow::anyhow!(
            "--expires: {s:?} is neither a duration nor a time\nhint: use e.g. --expires 90d or --expires 2027-01-01T00:00:00Z"
        )
    })?;
    Ok(s.to_owned())
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// Runs `floodgate token`.
pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let TokenCommand::New(a) = args.command;
    let (token, sha256) = generate()?;
    let table = TokenTable {
        name: a.name.clone(),
        sha256: sha256.clone(),
        namespaces: a.namespaces.iter().map(|n| n.trim().to_owned()).collect(),
        role: a.role.clone(),
        expires: a.expires.as_deref().map(expiry).transpose()?,
        rate: a.rate.clone(),
    };
    // The server's own rules, so what is printed is what it accepts.
    Tokens::build(std::slice::from_ref(&table)).map_err(|e| {
        let m = e.to_string();
        let m = m.strip_prefix("tokens[0].").unwrap_or(&m).to_owned();
        anyhow::anyhow!("--{m}")
    })?;
    let namespaces: Vec<String> = table.namespaces.iter().map(|n| quoted(n)).collect();
    println!(
        "# token (shown once; give it to the client as FLOODGATE_TOKEN, never put it in the config):"
    );
    println!("{token}");
    println!();
    println!("# add to the server's configuration file:");
    println!("[[tokens]]");
    println!("name = {}", quoted(&table.name));
    println!("sha256 = {}", quoted(&sha256));
    println!("namespaces = [{}]", namespaces.join(", "));
    println!("role = {}", quoted(&table.role));
    if let Some(e) = &table.expires {
        println!("expires = {}", quoted(e));
    }
    if let Some(r) = &table.rate {
        println!("rate = {}", quoted(r));
    }
    Ok(ExitCode::SUCCESS)
}
