//! `kizo-snapshot`: list, verify, inspect, create, restore and export snapshots. Reading
//! snapshots needs only their folder; `create` and `restore` also read the log from the store
//! (the same `DATABASE_URL` / `--data-dir` as the server), which may be running meanwhile.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use kizo_engine::{Account, LedgerImage};
use kizo_persistence::projector::ProjectorConfig;
use kizo_persistence::read_models::ReadModels;
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};
use serde_json::json;

use crate::dir::{snapshot_name, SnapshotDir};
use crate::format::Manifest;
use crate::rebuild::{rebuild, Base, Retention, Target};

#[derive(Debug, Parser)]
#[command(
    name = "kizo-snapshot",
    version,
    about = "Kizo's snapshots: list, verify, inspect, create, restore, export"
)]
pub struct Cli {
    /// PostgreSQL log store (as the server's); unset: the embedded store in --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,
    /// The server's data folder (the embedded store, and snapshots unless --snapshot-dir).
    #[arg(long, env = "KIZO_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// The snapshots' folder (default: <data-dir>/snapshots).
    #[arg(long, env = "KIZO_SNAPSHOT_DIR", global = true)]
    pub snapshot_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Snapshots with LSN, time, size, accounts and transfers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Checksums, decoding and the ledger's invariants of one snapshot; exits 1 on any fault.
    Verify {
        /// A snapshot: its folder name (lsn-...), its LSN, a path to its folder, or `latest`.
        snapshot: String,
    },
    /// Totals per ledger, the largest accounts, or one account.
    Inspect {
        snapshot: String,
        /// One account (decimal or UUID).
        #[arg(long)]
        account: Option<String>,
        /// How many of the largest accounts to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// A new snapshot from the log alone (ignoring every snapshot), up to an LSN or a time.
    Create {
        #[command(flatten)]
        point: Point,
        /// Parts to split it into.
        #[arg(long, default_value_t = 2)]
        parts: u32,
        #[command(flatten)]
        retain: Retain,
    },
    /// The state as of an LSN or a time, from the best snapshot plus the log, written as a new
    /// snapshot (into --out, default the snapshots' folder).
    Restore {
        #[command(flatten)]
        point: Point,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 2)]
        parts: u32,
        #[command(flatten)]
        retain: Retain,
    },
    /// Every account's balances as of a snapshot, for auditors.
    Export {
        snapshot: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
#[group(multiple = false)]
pub struct Point {
    /// Up to and including this LSN.
    #[arg(long)]
    pub to_lsn: Option<u64>,
    /// Up to this time (RFC 3339, e.g. 2026-11-25T18:00:00Z): every commit made by then.
    #[arg(long)]
    pub to_time: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct Retain {
    /// Keep only the newest COUNT transfers of those the read models already hold, as the
    /// server's own snapshots do (with the id filters): its size and the memory to make it
    /// follow the accounts, not the history. Without it, every transfer: a snapshot any engine
    /// loads, which grows with the history.
    #[arg(long, value_name = "COUNT")]
    pub transfer_window: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Json,
    Csv,
}

/// What went wrong, for the exit status: 1 for a fault found, 2 for a usage or I/O error.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Fault(String),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Fault(_) => 1,
            CliError::Usage(_) => 2,
        }
    }
}

fn usage(error: impl std::fmt::Display) -> CliError {
    CliError::Usage(error.to_string())
}

impl Cli {
    fn snapshots(&self) -> SnapshotDir {
        crate::dir::open(
            self.snapshot_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("snapshots")),
        )
    }

    /// The folder and name a snapshot argument names.
    fn resolve(&self, snapshot: &str) -> Result<(SnapshotDir, String), CliError> {
        let path = PathBuf::from(snapshot);
        if path.join(crate::format::MANIFEST).is_file() {
            let canonical = path.canonicalize().map_err(usage)?;
            let name = canonical
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| usage("a snapshot folder has a name"))?;
            let parent = canonical.parent().map(PathBuf::from).unwrap_or_default();
            return Ok((crate::dir::open(parent), name));
        }
        let dir = self.snapshots();
        let name = if snapshot == "latest" {
            let listed = dir.list().map_err(usage)?;
            listed
                .last()
                .map(|l| l.name.clone())
                .ok_or_else(|| usage(format!("no snapshots in {}", dir.root().display())))?
        } else if let Ok(lsn) = snapshot.parse::<u64>() {
            snapshot_name(lsn)
        } else {
            snapshot.to_string()
        };
        Ok((dir, name))
    }

    fn store(&self) -> StoreConfig {
        StoreConfig::from_settings(self.database_url.clone(), Some(self.data_dir.clone()))
    }

    async fn log(&self) -> Result<Arc<DurableWal>, CliError> {
        let store = LogStore::open(&self.store()).await.map_err(usage)?;
        DurableWal::open(store, WalConfig::default())
            .await
            .map_err(usage)
    }
}

impl Cli {
    /// What a snapshot made here keeps: with a window, what the server's shards would keep,
    /// given how far the server's projector has written the read models.
    async fn retention(&self, retain: &Retain) -> Result<Retention, CliError> {
        let Some(window) = retain.transfer_window else {
            return Ok(Retention::Everything);
        };
        if !(1..=kizo_engine::EngineConfig::TRANSFER_WINDOW_MAX).contains(&window) {
            return Err(usage(format!(
                "--transfer-window is 1 to {}",
                kizo_engine::EngineConfig::TRANSFER_WINDOW_MAX
            )));
        }
        let read_models = ReadModels::open(&self.store()).await.map_err(usage)?;
        let stored_lsn = read_models
            .progress(&ProjectorConfig::default().name)
            .await
            .map_err(usage);
        read_models.close().await;
        Ok(Retention::Window {
            shard_count: 1,
            window,
            stored_lsn: stored_lsn?,
        })
    }
}

/// Runs the command, writing its report to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match &cli.command {
        Command::List { json } => list(&cli, *json, out),
        Command::Verify { snapshot } => {
            let (dir, name) = cli.resolve(snapshot)?;
            let started = Instant::now();
            let loaded = tokio::task::spawn_blocking(move || dir.verify(&name))
                .await
                .map_err(usage)?;
            let (manifest, _) = loaded.map_err(|error| CliError::Fault(error.to_string()))?;
            writeln!(
                out,
                "{}: ok (LSN {}, {} accounts, {} transfers, {} files, {} bytes, checked in {} ms)",
                snapshot_name(manifest.lsn),
                manifest.lsn,
                manifest.accounts,
                manifest.transfers,
                manifest.files.len(),
                manifest.bytes,
                started.elapsed().as_millis()
            )
            .map_err(usage)
        }
        Command::Inspect {
            snapshot,
            account,
            top,
            json,
        } => {
            let (manifest, image) = load(&cli, snapshot).await?;
            inspect(&manifest, &image, account.as_deref(), *top, *json, out)
        }
        Command::Create {
            point,
            parts,
            retain,
        } => {
            let retention = cli.retention(retain).await?;
            write_rebuilt(&cli, point, Base::LogOnly, retention, None, *parts, out).await
        }
        Command::Restore {
            point,
            out: to,
            parts,
            retain,
        } => {
            if point.to_lsn.is_none() && point.to_time.is_none() {
                return Err(usage("restore needs --to-lsn or --to-time"));
            }
            let retention = cli.retention(retain).await?;
            let to = to.clone();
            write_rebuilt(&cli, point, Base::BestSnapshot, retention, to, *parts, out).await
        }
        Command::Export {
            snapshot,
            format,
            output,
        } => {
            let (_, image) = load(&cli, snapshot).await?;
            match output {
                Some(path) => {
                    let file = std::fs::File::create(path).map_err(usage)?;
                    let mut writer = std::io::BufWriter::new(file);
                    export(&image, *format, &mut writer)?;
                    writer.flush().map_err(usage)
                }
                None => export(&image, *format, out),
            }
        }
    }
}

async fn load(cli: &Cli, snapshot: &str) -> Result<(Manifest, LedgerImage), CliError> {
    let (dir, name) = cli.resolve(snapshot)?;
    tokio::task::spawn_blocking(move || dir.load(&name))
        .await
        .map_err(usage)?
        .map_err(|error| CliError::Fault(error.to_string()))
}

fn list(cli: &Cli, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let dir = cli.snapshots();
    let listed = dir.list().map_err(usage)?;
    if json {
        let rows: Vec<_> = listed
            .iter()
            .map(|l| match &l.manifest {
                Ok(m) => json!({
                    "name": l.name, "lsn": m.lsn, "created_at": m.created_at, "bytes": m.bytes,
                    "accounts": m.accounts, "transfers": m.transfers, "shard_count": m.shard_count,
                }),
                Err(error) => json!({ "name": l.name, "lsn": l.lsn, "error": error.to_string() }),
            })
            .collect();
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&rows).map_err(usage)?
        )
        .map_err(usage);
    }
    writeln!(
        out,
        "{:<26} {:>12} {:<26} {:>14} {:>12} {:>12}",
        "snapshot", "lsn", "created", "bytes", "accounts", "transfers"
    )
    .map_err(usage)?;
    for l in &listed {
        match &l.manifest {
            Ok(m) => writeln!(
                out,
                "{:<26} {:>12} {:<26} {:>14} {:>12} {:>12}",
                l.name, m.lsn, m.created_at, m.bytes, m.accounts, m.transfers
            ),
            Err(error) => writeln!(out, "{:<26} {:>12} unreadable: {error}", l.name, l.lsn),
        }
        .map_err(usage)?;
    }
    if listed.is_empty() {
        writeln!(out, "(no snapshots in {})", dir.root().display()).map_err(usage)?;
    }
    Ok(())
}

/// An account id as the API shows it (a UUID) or as a decimal u128.
pub fn parse_account_id(text: &str) -> Option<u128> {
    text.parse()
        .ok()
        .or_else(|| uuid::Uuid::parse_str(text).ok().map(|u| u.as_u128()))
}

fn uuid_of(id: u128) -> String {
    uuid::Uuid::from_u128(id).to_string()
}

fn account_json(a: &Account) -> serde_json::Value {
    json!({
        "id": a.id.to_string(), "uuid": uuid_of(a.id), "ledger": a.ledger, "code": a.code,
        "flags": a.flags.0,
        "debits_pending": a.debits_pending.to_string(), "debits_posted": a.debits_posted.to_string(),
        "credits_pending": a.credits_pending.to_string(), "credits_posted": a.credits_posted.to_string(),
        "timestamp": a.timestamp,
    })
}

/// What an account holds, credits minus debits posted (negative for a debit balance).
fn net(a: &Account) -> i128 {
    let credits = i128::try_from(a.credits_posted).unwrap_or(i128::MAX);
    let debits = i128::try_from(a.debits_posted).unwrap_or(i128::MAX);
    credits.saturating_sub(debits)
}

fn inspect(
    manifest: &Manifest,
    image: &LedgerImage,
    account: Option<&str>,
    top: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if let Some(text) = account {
        let id = parse_account_id(text)
            .ok_or_else(|| usage(format!("{text:?} is not an account id")))?;
        let found = image
            .accounts
            .binary_search_by_key(&id, |a| a.id)
            .map(|at| image.accounts[at])
            .map_err(|_| CliError::Fault(format!("no account {text} in this snapshot")))?;
        let transfers = image
            .transfers
            .iter()
            .filter(|t| t.debit_account_id == id || t.credit_account_id == id)
            .count();
        let mut value = account_json(&found);
        value["transfers"] = json!(transfers);
        return if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&value).map_err(usage)?)
        } else {
            writeln!(
                out,
                "account {} ({})\n  ledger {} code {} flags {:#x}\n  debits  pending {} posted {}\n  credits pending {} posted {}\n  transfers {}",
                found.id, uuid_of(found.id), found.ledger, found.code, found.flags.0,
                found.debits_pending, found.debits_posted, found.credits_pending,
                found.credits_posted, transfers
            )
        }
        .map_err(usage);
    }
    let mut ledgers: std::collections::BTreeMap<u32, [u128; 5]> = Default::default();
    for a in &image.accounts {
        let totals = ledgers.entry(a.ledger).or_default();
        totals[0] += 1;
        for (total, value) in totals[1..].iter_mut().zip([
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ]) {
            *total = total.wrapping_add(value);
        }
    }
    let mut largest: Vec<&Account> = image.accounts.iter().collect();
    let top = top.min(largest.len());
    if top > 0 {
        largest.select_nth_unstable_by_key(top - 1, |a| std::cmp::Reverse(net(a).unsigned_abs()));
    }
    largest.truncate(top);
    largest.sort_by_key(|a| std::cmp::Reverse(net(a).unsigned_abs()));
    if json {
        let value = json!({
            "snapshot": snapshot_name(manifest.lsn), "lsn": manifest.lsn,
            "created_at": manifest.created_at, "accounts": manifest.accounts,
            "transfers": manifest.transfers, "pending": manifest.pending, "failed": manifest.failed,
            "ledgers": ledgers.iter().map(|(ledger, t)| json!({
                "ledger": ledger, "accounts": t[0] as u64,
                "debits_pending": t[1].to_string(), "debits_posted": t[2].to_string(),
                "credits_pending": t[3].to_string(), "credits_posted": t[4].to_string(),
            })).collect::<Vec<_>>(),
            "largest": largest.iter().map(|a| account_json(a)).collect::<Vec<_>>(),
        });
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&value).map_err(usage)?
        )
        .map_err(usage);
    }
    let mut text = format!(
        "{} at LSN {} ({}): {} accounts, {} transfers ({} two-phase), {} failed ids\n\nper ledger:\n",
        snapshot_name(manifest.lsn), manifest.lsn, manifest.created_at, manifest.accounts,
        manifest.transfers, manifest.pending, manifest.failed
    );
    for (ledger, t) in &ledgers {
        text += &format!(
            "  ledger {ledger}: {} accounts, debits posted {} pending {}, credits posted {} pending {}\n",
            t[0], t[2], t[1], t[4], t[3]
        );
    }
    text += &format!("\nlargest {top} accounts by posted balance:\n");
    for a in largest {
        text += &format!(
            "  {} ledger {} balance {}\n",
            uuid_of(a.id),
            a.ledger,
            net(a)
        );
    }
    out.write_all(text.as_bytes()).map_err(usage)
}

fn export(image: &LedgerImage, format: ExportFormat, out: &mut dyn Write) -> Result<(), CliError> {
    match format {
        ExportFormat::Csv => {
            writeln!(out, "id,uuid,ledger,code,flags,debits_pending,debits_posted,credits_pending,credits_posted,timestamp")
                .map_err(usage)?;
            for a in &image.accounts {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    a.id,
                    uuid_of(a.id),
                    a.ledger,
                    a.code,
                    a.flags.0,
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                    a.timestamp
                )
                .map_err(usage)?;
            }
        }
        ExportFormat::Json => {
            // One account per line inside the array, so that a large export streams.
            writeln!(
                out,
                "{{\"lsn\":{},\"timestamp_max\":{},\"accounts\":[",
                image.lsn, image.timestamp_max
            )
            .map_err(usage)?;
            for (i, a) in image.accounts.iter().enumerate() {
                let comma = if i + 1 < image.accounts.len() {
                    ","
                } else {
                    ""
                };
                writeln!(out, "{}{comma}", account_json(a)).map_err(usage)?;
            }
            writeln!(out, "]}}").map_err(usage)?;
        }
    }
    Ok(())
}

fn parse_time(text: &str) -> Result<u64, CliError> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|error| usage(format!("--to-time {text:?}: {error}")))?;
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| usage("--to-time is before 1970"))?;
    u64::try_from(since.as_nanos()).map_err(|_| usage("--to-time is after 2554"))
}

async fn write_rebuilt(
    cli: &Cli,
    point: &Point,
    base: Base,
    retention: Retention,
    to: Option<PathBuf>,
    parts: u32,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if !(1..=crate::format::PARTS_MAX).contains(&parts) {
        return Err(usage(format!(
            "--parts is 1 to {}",
            crate::format::PARTS_MAX
        )));
    }
    let target = match (point.to_lsn, &point.to_time) {
        (Some(lsn), _) => Target::Lsn(lsn),
        (None, Some(time)) => Target::Time(parse_time(time)?),
        (None, None) => Target::Latest,
    };
    let wal = cli.log().await?;
    let dir = Arc::new(cli.snapshots());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} replaying the log [{bar:40}] {pos}/{len} commits ({per_sec}, {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let rebuilt = rebuild(
        Some(dir.clone()),
        wal.as_ref(),
        target,
        base,
        retention,
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )
    .await
    .map_err(|error| CliError::Fault(error.to_string()))?;
    bar.finish_and_clear();
    for skipped in &rebuilt.skipped {
        writeln!(out, "passed over {}: {}", skipped.name, skipped.error).map_err(usage)?;
    }
    rebuilt
        .image
        .check()
        .map_err(|error| CliError::Fault(error.to_string()))?;
    let destination = Arc::new(match to {
        Some(path) => crate::dir::open(path),
        None => crate::dir::open(dir.root().to_path_buf()),
    });
    let image = rebuilt.image;
    let writer = destination.clone();
    let manifest = tokio::task::spawn_blocking(move || {
        writer.write(&image, parts, &crate::rfc3339(&kizo_engine::SystemClock))
    })
    .await
    .map_err(usage)?
    .map_err(usage)?;
    let created = SystemTime::UNIX_EPOCH + Duration::from_nanos(manifest.timestamp_max);
    writeln!(
        out,
        "wrote {} (LSN {}, last commit at {}): {} accounts, {} transfers, {} bytes; from {} plus {} commits in {:.1} s",
        destination.path_of(&snapshot_name(manifest.lsn)).display(),
        manifest.lsn,
        humantime::format_rfc3339_millis(created),
        manifest.accounts,
        manifest.transfers,
        manifest.bytes,
        rebuilt.base.as_deref().unwrap_or("the empty ledger"),
        rebuilt.replayed,
        started.elapsed().as_secs_f64()
    )
    .map_err(usage)
}
