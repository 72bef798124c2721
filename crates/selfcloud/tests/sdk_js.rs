//! The TypeScript/JavaScript SDK (`sdk/js`) tested by Node's own test runner against real
//! systems: consent, every area of the session, token refresh and every SPEC error code.

mod common;

use common::{SmallDisk, TestSystem, REDIRECT};

/// Runs one file of `sdk/js/test` against `sys`, with a fresh developer and app; returns the report.
async fn node_test(sys: &TestSystem, file: &str, extra_env: &[(&str, String)]) -> String {
    let developer = sys.user("developer").await;
    let app = sys.app(&developer, "notes-js").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/js");
    let out = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(format!("test/{file}"))
        .current_dir(&dir)
        .env("SELFCLOUD_URL", &sys.client.base)
        .env("SELFCLOUD_REDIRECT", REDIRECT)
        .env("SELFCLOUD_APP_ID", &app.app_id)
        .env("SELFCLOUD_APP_SECRET", app.app_secret.as_deref().expect("a confidential app"))
        .env("SELFCLOUD_DEV_TOKEN", &developer)
        .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(out.status.success(), "node --test {file} failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_passes_its_node_tests() {
    let sys = TestSystem::start(&[("SELFCLOUD_VALIDATORS", "4")]);
    let report = node_test(&sys, "sdk.test.mjs", &[]).await;
    assert!(report.contains("pass 2") && report.contains("fail 0"), "both node tests ran: {report}");
}

/// The bytes of the small disk the INTERNAL case fills (the data directory's tmpfs).
const SMALL_DISK_BYTES: u64 = 32 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_meets_the_rarer_codes() {
    let env = [("SELFCLOUD_VALIDATORS", "0"), ("SELFCLOUD_STORAGE_GROWTH_BYTES", "300000")];
    let disk = SmallDisk::mount(SMALL_DISK_BYTES);
    let (sys, extra) = match &disk {
        Ok(disk) => (TestSystem::start_in(&disk.path().join("data"), &env), vec![("SELFCLOUD_SMALL_DISK", SMALL_DISK_BYTES.to_string())]),
        Err(why) => {
            println!("SKIPPED (INTERNAL on a full disk only): {why}");
            (TestSystem::start(&env), vec![])
        }
    };
    let report = node_test(&sys, "rare-codes.test.mjs", &extra).await;
    assert!(report.contains("fail 0"), "the node test ran: {report}");
    if disk.is_ok() {
        assert!(report.contains("pass 1") && report.contains("skipped 0"), "the full-disk case ran: {report}");
    } else {
        // The test skips itself (after every other code was checked) where no small disk is mounted.
        assert!(report.contains("pass 1") || report.contains("skipped 1"), "the node test ran: {report}");
    }
}
