//! SPEC §7 through the user interfaces, in a real headless Chromium driven by Playwright
//! (`e2e/superapp.test.mjs`, `playwright-core` from npm, Debian's `chromium`): sign-up in the
//! Super-App, consent for `examples/notes`, the app's storage, files and AI, streamed chat,
//! uploads with progress, revocation, the access log, export and account deletion.
//! Screenshots of every step land in `artifacts/e2e/` at the workspace root.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestSystem;

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_newcomers_path_works_in_a_real_browser() {
    let chromium = std::env::var("CHROMIUM").ok().or_else(|| which("chromium"));
    let playwright = workspace().join("e2e/node_modules/playwright-core");
    let (Some(chromium), true) = (chromium, playwright.is_dir()) else {
        // Visible, never silent: scripts/test.sh installs both (system-deps.sh, interop-deps.sh).
        println!("SKIPPED: the browser test needs Debian's chromium and e2e/node_modules (run scripts/system-deps.sh as root and scripts/interop-deps.sh)");
        eprintln!("SKIPPED: the browser test needs Debian's chromium and e2e/node_modules");
        return;
    };
    let sys = TestSystem::start(&[]);
    let artifacts = workspace().join("artifacts/e2e");
    let _ = std::fs::remove_dir_all(&artifacts);
    let run = tokio::process::Command::new("node")
        .args(["--test", "--test-reporter=spec", "superapp.test.mjs"])
        .current_dir(workspace().join("e2e"))
        .env("SELFCLOUD_URL", &sys.client.base)
        .env("SELFCLOUD_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run).await.expect("the browser test finishes within 15 minutes").expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "the browser test failed (screenshots in {}):\n{report}\n{}", artifacts.display(), String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("pass 8") && report.contains("fail 0"), "all seven steps ran: {report}");
    let shots = std::fs::read_dir(&artifacts).map(|d| d.count()).unwrap_or(0);
    assert!(shots >= 10, "a screenshot of every step in {}: found {shots}", artifacts.display());
}

fn which(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).map(|p| p.display().to_string())
}
