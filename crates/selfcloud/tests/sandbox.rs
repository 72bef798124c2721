//! The sandbox, checked from the inside. As root: instances run under distinct uids in their own
//! pid namespaces, and a process confined exactly like alice's instance cannot read bob's files,
//! open bob's socket, ptrace or signal bob's instance, read host secrets, write outside its
//! directory or open TCP connections — while it can read its own files (the positive control).
//! Without root, the checks that need root are skipped with a printed reason.

mod common;

use common::{exe, instance_processes, is_root, TestSystem};
use serde_json::Value;

fn probe(args: &[String]) -> Vec<Value> {
    let out = std::process::Command::new(exe()).arg("sandbox-probe").args(args).output().expect("probe runs");
    assert!(out.status.success(), "probe failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn outcome<'a>(results: &'a [Value], op: &str, target: &str) -> &'a Value {
    results.iter().find(|r| r["op"] == op && r["target"] == target).unwrap_or_else(|| panic!("no {op} {target} in {results:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_cannot_reach_another_instance_or_the_host() {
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    assert_eq!(sys.put("alice", "k", &alice, serde_json::json!(1)).await.status, 200);
    assert_eq!(sys.put("bob", "k", &bob, serde_json::json!(2)).await.status, 200);
    let data = sys.data_dir();
    let alice_procs = instance_processes(&data, "alice");
    let bob_procs = instance_processes(&data, "bob");
    assert!(!alice_procs.is_empty() && !bob_procs.is_empty());

    let alice_dir = data.join("instances/alice");
    let bob_dir = data.join("instances/bob");
    let mut args: Vec<String> = vec!["--user".into(), "alice".into(), "--dir".into(), alice_dir.display().to_string()];
    if is_root() {
        let alice_uid = alice_procs.iter().map(|p| p.1).max().unwrap();
        let bob_uid = bob_procs.iter().map(|p| p.1).max().unwrap();
        assert_ne!(alice_uid, bob_uid, "instances run under distinct uids");
        assert!(alice_uid >= 200_000 && bob_uid >= 200_000, "uids come from the reserved range");
        for pid in alice_procs.iter().chain(&bob_procs).map(|p| p.0) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "pid {pid} has no_new_privs");
        }
        let pid_one = alice_procs.iter().any(|(pid, _)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"))
        });
        assert!(pid_one, "the instance is pid 1 of its own namespace");
        args.extend(["--uid".into(), alice_uid.to_string()]);
    } else {
        eprintln!("SKIPPED (not root): private uids, pid namespaces and cross-uid checks; running the landlock/seccomp part only");
    }
    let bob_pid = bob_procs.iter().map(|p| p.0).max().unwrap();
    let own_store = alice_dir.join("store.redb");
    let targets = [
        ("--try-read", own_store.display().to_string()),
        ("--try-read", bob_dir.join("store.redb").display().to_string()),
        ("--try-read", data.join("control.redb").display().to_string()),
        ("--try-read", data.join("master.key").display().to_string()),
        ("--try-read", "/etc/shadow".to_owned()),
        ("--try-read", "/etc/hostname".to_owned()),
        ("--try-write", "/tmp/selfcloud-probe-escape".to_owned()),
        ("--try-connect", bob_dir.join("api.sock").display().to_string()),
        ("--try-ptrace", bob_pid.to_string()),
        ("--try-tcp", sys.listen()),
    ];
    for (flag, value) in &targets {
        args.push((*flag).to_owned());
        args.push(value.clone());
    }
    let results = probe(&args);
    assert_eq!(outcome(&results, "read", &own_store.display().to_string())["allowed"], true, "positive control: its own files are readable");
    for (flag, value) in targets.iter().skip(1) {
        let op = flag.trim_start_matches("--try-");
        assert_eq!(outcome(&results, op, value)["allowed"], false, "{op} {value} must be denied: {results:?}");
    }
    assert_eq!(outcome(&results, "signal", &bob_pid.to_string())["allowed"], false, "no signals to bob's instance");
    assert!(!std::path::Path::new("/tmp/selfcloud-probe-escape").exists());
}

/// What a compromised instance could do in its own directory: move its socket aside and put a
/// link to bob's in its place. The gateway connects as root, so the link alone would take alice's
/// requests to bob's instance; it checks who answers the socket and refuses another uid.
#[tokio::test(flavor = "multi_thread")]
async fn a_link_in_place_of_an_instance_socket_never_reaches_another_instance() {
    if !is_root() {
        eprintln!("SKIPPED (not root): instances share the gateway's uid, so a socket's owner cannot tell them apart");
        return;
    }
    let sys = TestSystem::start(&[]);
    let alice = sys.user("alice").await;
    let bob = sys.user("bob").await;
    assert_eq!(sys.put("bob", "only-bob", &bob, serde_json::json!("bob's")).await.status, 200);
    let data = sys.data_dir();
    let alice_socket = data.join("instances/alice/api.sock");
    std::fs::rename(&alice_socket, data.join("instances/alice/api.sock.aside")).unwrap();
    std::os::unix::fs::symlink(data.join("instances/bob/api.sock"), &alice_socket).unwrap();
    // More requests at once than the gateway keeps idle connections: most open new ones.
    let replies = futures::future::join_all((0..64).map(|_| sys.get("alice", "only-bob", &alice))).await;
    for reply in &replies {
        assert_ne!(reply.status, 200, "alice's request was answered by bob's instance: {}", reply.text);
    }
    // Refused, the instance was restarted on a socket of its own; alice's store has no such key.
    let after = sys.get("alice", "only-bob", &alice).await;
    assert_eq!(after.status, 404, "{}", after.text);
}
