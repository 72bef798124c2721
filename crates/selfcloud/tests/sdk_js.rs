//! The TypeScript/JavaScript SDK (`sdk/js`) tested by Node's own test runner against this real
//! system: consent, every area of the session, token refresh and the error codes.

mod common;

use common::{TestSystem, REDIRECT};

#[tokio::test(flavor = "multi_thread")]
async fn the_js_sdk_passes_its_node_tests() {
    let sys = TestSystem::start(&[("SELFCLOUD_VALIDATORS", "4")]);
    let developer = sys.user("developer").await;
    let app = sys.app(&developer, "notes-js").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/js");
    let out = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg("test/")
        .current_dir(&dir)
        .env("SELFCLOUD_URL", &sys.client.base)
        .env("SELFCLOUD_REDIRECT", REDIRECT)
        .env("SELFCLOUD_APP_ID", &app.app_id)
        .env("SELFCLOUD_APP_SECRET", app.app_secret.as_deref().expect("a confidential app"))
        .env("SELFCLOUD_DEV_TOKEN", &developer)
        .output()
        .await
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "node --test failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("pass 2"), "both node tests ran: {report}");
}
