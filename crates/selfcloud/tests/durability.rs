//! Crashes and restarts: acknowledged writes survive `kill -9` of an instance and of
//! `selfcloud up`; a killed instance comes back on the next request; idle instances hibernate and
//! wake transparently; an idle instance is not killed with the thread that started it; a restart
//! brings every user back.

mod common;

use common::{instance_processes, TestSystem};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9_of_the_instance_and_of_up() {
    let mut sys = TestSystem::start(&[("SELFCLOUD_RATE_FREE_PER_MIN", "100000")]);
    let alice = sys.user("alice").await;
    for i in 0..50 {
        assert_eq!(sys.put("alice", &format!("k{i}"), &alice, json!({"n": i})).await.status, 200);
    }

    // kill -9 every process of alice's instance; the next request restarts it.
    let procs = instance_processes(&sys.data_dir(), "alice");
    assert!(!procs.is_empty(), "alice's instance runs");
    for (pid, _) in &procs {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    let data_dir = sys.data_dir();
    common::eventually("alice's instance to die", || instance_processes(&data_dir, "alice").iter().all(|p| !procs.contains(p))).await;
    let r = sys.get("alice", "k7", &alice).await;
    assert_eq!(r.status, 200, "the killed instance came back: {}", r.text);
    assert_eq!(r.json["value"], json!({"n": 7}));

    // kill -9 of `selfcloud up` itself (its instances die with it), then restart.
    for i in 50..60 {
        assert_eq!(sys.put("alice", &format!("k{i}"), &alice, json!({"n": i})).await.status, 200);
    }
    sys.restart(true);
    common::eventually("orphan instances to die with their gateway", || instance_processes(&data_dir, "alice").is_empty()).await;
    let alice = sys.client.sign_in("alice", common::PASSWORD).await.expect("accounts survive a crash");
    for i in 0..60 {
        let r = sys.get("alice", &format!("k{i}"), &alice).await;
        assert_eq!(r.json["value"], json!({"n": i}), "k{i} after kill -9: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_restart_brings_users_grants_and_revocations_back() {
    let mut sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let app = sys.app(&alice, "notes").await;
    let keep = sys.grant(&app, &alice, "storage:read storage:write").await;
    let other = sys.app(&alice, "other").await;
    let gone = sys.grant(&other, &alice, "storage:read").await;
    assert_eq!(sys.put("alice", "kept", &keep.access_token, json!("yes")).await.status, 200);
    let r = sys.call(Method::DELETE, &format!("/i/alice/v1/grants/{}", other.app_id), Some(&alice), None).await;
    assert_eq!(r.status, 200);

    sys.restart(false);
    assert_eq!(sys.get("alice", "kept", &keep.access_token).await.json["value"], json!("yes"), "tokens and data survive a restart");
    assert_eq!(sys.get("alice", "kept", &gone.access_token).await.code(), Some("UNAUTHENTICATED"), "revocations survive a restart");
    let grants = sys.call(Method::GET, "/i/alice/v1/grants", Some(&alice), None).await;
    let ids: Vec<&str> = grants.json["grants"].as_array().unwrap().iter().filter_map(|g| g["app_id"].as_str()).collect();
    assert_eq!(ids, vec![app.app_id.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_hibernate_and_wake_on_the_next_request() {
    let sys = TestSystem::start(&[("SELFCLOUD_IDLE_TIMEOUT_SECS", "1")]);
    let alice = sys.user("alice").await;
    assert_eq!(sys.put("alice", "k", &alice, json!(1)).await.status, 200);
    let data_dir = sys.data_dir();
    common::eventually("alice's idle instance to hibernate", || instance_processes(&data_dir, "alice").is_empty()).await;
    // Hibernation is a clean stop: the store is closed, so waking does not repair it (a walk of
    // the whole file). A read-only open refuses a file that needs repair.
    let store = data_dir.join("instances/alice/store.redb");
    if let Err(e) = redb::ReadOnlyDatabase::open(&store) {
        panic!("the hibernated instance left its store needing repair: {e}");
    }
    let r = sys.get("alice", "k", &alice).await;
    assert_eq!(r.status, 200, "woke transparently: {}", r.text);
    assert_eq!(r.json["value"], json!(1));
    assert!(!instance_processes(&data_dir, "alice").is_empty());
}

/// An instance asks to be killed when its parent dies, and to the kernel the parent is the
/// spawning *thread*: an instance started from a short-lived thread (a blocking pool's, gone after
/// 10 s idle) would die with it. With no traffic, it must still be the same processes 13 s later.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_outlives_the_thread_that_started_it() {
    let sys = TestSystem::start(&[]);
    let _alice = sys.user("alice").await;
    let data_dir = sys.data_dir();
    let started = instance_processes(&data_dir, "alice");
    assert!(!started.is_empty(), "alice's instance runs");
    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
    assert_eq!(instance_processes(&data_dir, "alice"), started, "alice's instance died or was replaced while idle");
}

#[tokio::test(flavor = "multi_thread")]
async fn account_deletion_shreds_the_key_and_data() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    assert_eq!(sys.put("alice", "k", &alice, json!("secret")).await.status, 200);
    let r = sys.call(Method::DELETE, "/i/alice/v1/account", Some(&alice), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!sys.data_dir().join("instances/alice").exists(), "data removed");
    assert_eq!(sys.get("alice", "k", &alice).await.code(), Some("NOT_FOUND"));
    assert!(sys.client.sign_in("alice", common::PASSWORD).await.is_err());
    // The name is free again, with a fresh, empty instance.
    let again = sys.user("alice").await;
    assert_eq!(sys.get("alice", "k", &again).await.code(), Some("NOT_FOUND"));
    assert_eq!(sys.get("alice", "k", &alice).await.code(), Some("UNAUTHENTICATED"), "the old session died with the account");
}

/// `SO_REUSEPORT` would let a second `selfcloud up` join the first one's port and answer half its
/// connections with other keys; the second must refuse to start and the first keep serving alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_up_on_a_served_port_is_refused() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let other = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(common::exe());
    second.arg("up").arg("--data-dir").arg(other.path()).arg("--listen").arg(sys.listen());
    let mut second = second.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("second selfcloud up");
    let exited = common::wait_exit(&mut second, std::time::Duration::from_secs(20));
    if exited.is_none() {
        let _ = second.kill();
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(exited.is_some_and(|status| !status.success()), "a second gateway started on {}: {stderr}", sys.listen());
    assert!(stderr.contains("in use"), "{stderr}");
    assert_eq!(sys.put("alice", "k", &alice, json!(1)).await.status, 200);
    for _ in 0..20 {
        let r = reqwest::Client::new().get(format!("{}/i/alice/v1/storage/k", sys.client.base)).bearer_auth(&alice).send().await.expect("request");
        assert_eq!(r.status(), 200, "every new connection still reaches the first gateway");
    }
}
