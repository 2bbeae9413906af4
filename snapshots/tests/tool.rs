//! `kizo-snapshot` as an operator runs it, over a real data folder: create, list, verify,
//! inspect, restore to an LSN and to a time, export; and verify failing on a damaged snapshot.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kizo_engine::{Account, AccountFlags, Engine, EngineConfig, Transfer, Wal};
use kizo_persistence::{DurableWal, LogStore, StoreConfig, WalConfig};

fn tool(data: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kizo-snapshot"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KIZO_SNAPSHOT_DIR")
        .output()
        .expect("the tool runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A data folder whose log holds 3 wallets funded by a bank account, then payments, written
/// in two halves at least 50 ms apart; returns the LSN and time (ns) between the halves.
fn data_folder(data: &Path) -> (u64, u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = StoreConfig::Embedded {
            dir: data.to_path_buf(),
        };
        let log = LogStore::open(&store).await.unwrap();
        let wal: Arc<DurableWal> = DurableWal::open(log, WalConfig::default()).await.unwrap();
        let engine = Engine::start(EngineConfig::default(), wal.clone())
            .await
            .unwrap();
        let mut accounts = vec![Account::new(1, 840, 1)];
        for id in 2..=4 {
            accounts.push(Account {
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                ..Account::new(id, 840, 2)
            });
        }
        engine.create_accounts(accounts).await.unwrap();
        for id in 2..=4u128 {
            engine
                .create_transfers(vec![Transfer::new(10 + id, 1, id, 1_000, 840, 1)])
                .await
                .unwrap();
        }
        let middle_lsn = wal.last_lsn();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let middle_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for id in 20..30u128 {
            engine
                .create_transfers(vec![Transfer::new(
                    id,
                    2 + id % 3,
                    2 + (id + 1) % 3,
                    7,
                    840,
                    1,
                )])
                .await
                .unwrap();
        }
        engine.shutdown().await;
        (middle_lsn, middle_time)
    })
}

#[test]
fn the_tool_creates_lists_verifies_inspects_restores_and_exports() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path();
    let (middle_lsn, middle_time) = data_folder(data);

    let (code, out, err) = tool(data, &["create"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from the empty ledger"), "{out}");
    let (code, out, _) = tool(data, &["list", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let last_lsn = listed[0]["lsn"].as_u64().unwrap();
    assert_eq!(listed[0]["accounts"], 4);
    assert_eq!(listed[0]["transfers"], 13);
    let (code, out, _) = tool(data, &["list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("lsn-{last_lsn:020}")), "{out}");

    let (code, out, err) = tool(data, &["verify", "latest"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": ok"), "{out}");

    let (code, out, _) = tool(data, &["inspect", &last_lsn.to_string(), "--json"]);
    assert_eq!(code, 0);
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["ledgers"][0]["debits_posted"], "3070");
    assert_eq!(inspected["ledgers"][0]["credits_posted"], "3070");
    let (code, out, _) = tool(
        data,
        &[
            "inspect",
            "latest",
            "--account",
            "00000000-0000-0000-0000-000000000002",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("credits pending 0 posted 1028"), "{out}");
    let (code, _, err) = tool(data, &["inspect", "latest", "--account", "99"]);
    assert_eq!(code, 1, "{err}");

    // Back to the middle: by LSN, then by time (both from the log: no snapshot is older).
    let (code, out, err) = tool(data, &["restore", "--to-lsn", &middle_lsn.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = tool(data, &["inspect", &middle_lsn.to_string(), "--json"]);
    assert_eq!(code, 0);
    let middle: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(middle["transfers"], 3);
    let restored = folder.path().join("restored");
    let time = humantime::format_rfc3339_nanos(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(middle_time),
    )
    .to_string();
    let (code, out, err) = tool(
        data,
        &[
            "restore",
            "--to-time",
            &time,
            "--out",
            restored.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let by_time = restored.join(format!("lsn-{middle_lsn:020}"));
    assert!(by_time.join("manifest.json").is_file(), "{out}");
    let (code, _, _) = tool(data, &["restore"]);
    assert_eq!(code, 2, "restore needs a point");
    let (code, _, _) = tool(data, &["restore", "--to-lsn", "999999"]);
    assert_eq!(code, 1, "past the end of the log");

    // Exports, for auditors.
    let (code, out, _) = tool(data, &["export", "latest", "--format", "csv"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5);
    assert!(lines[0].starts_with("id,uuid,ledger"));
    let (code, out, _) = tool(
        data,
        &["export", by_time.to_str().unwrap(), "--format", "json"],
    );
    assert_eq!(code, 0);
    let exported: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exported["lsn"], middle_lsn);
    assert_eq!(exported["accounts"][1]["credits_posted"], "1000");

    // Damage: verify fails with exit status 1 and names the fault.
    let part = data
        .join("snapshots")
        .join(format!("lsn-{last_lsn:020}"))
        .join("part-001.rkyv");
    let mut bytes = std::fs::read(&part).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&part, bytes).unwrap();
    let (code, _, err) = tool(data, &["verify", &last_lsn.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");
    let (code, _, err) = tool(data, &["verify", "lsn-00000000000000000077"]);
    assert_eq!(code, 1, "{err}");
}

/// With a window, `create` keeps what the server's shards would: transfers the read models do
/// not hold yet all stay; of those they hold, only the newest.
#[test]
fn a_windowed_snapshot_keeps_only_what_the_read_models_lack_and_the_newest() {
    let folder = tempfile::tempdir().unwrap();
    let data = folder.path();
    data_folder(data);
    let listed = |data: &Path| -> serde_json::Value {
        let (code, out, err) = tool(data, &["list", "--json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };

    // Nothing projected yet: every transfer stays.
    let (code, out, err) = tool(data, &["create", "--transfer-window", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(listed(data)[0]["transfers"], 13);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use kizo_persistence::projector::{Projector, ProjectorConfig};
        let store = StoreConfig::Embedded {
            dir: data.to_path_buf(),
        };
        let wal = DurableWal::open(LogStore::open(&store).await.unwrap(), WalConfig::default())
            .await
            .unwrap();
        let read_models = kizo_persistence::read_models::ReadModels::open(&store)
            .await
            .unwrap();
        let projector = Projector::start(wal.clone(), read_models, ProjectorConfig::default())
            .await
            .unwrap();
        assert!(
            projector
                .wait_for(wal.last_lsn(), std::time::Duration::from_secs(10))
                .await
        );
        projector.stop().await;
    });
    std::fs::remove_dir_all(data.join("snapshots")).unwrap();
    let (code, out, err) = tool(data, &["create", "--transfer-window", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let held = listed(data)[0]["transfers"].as_u64().unwrap();
    assert!((2..=3).contains(&held), "{held} transfers held");
    let (code, out, err) = tool(data, &["verify", "latest"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, _, err) = tool(data, &["create", "--transfer-window", "0"]);
    assert_eq!(code, 2, "{err}");
}
