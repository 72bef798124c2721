//! A real JavaScript OrbitDB peer (`interop/js/orbitdb-peer.mjs`: `@orbitdb/core` on Helia and
//! libp2p) driven over its stdin/stdout, one JSON command and one JSON answer per line, for the
//! replication tests and `selfcloud bench db`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};
use serde_json::Value;

/// A running JS OrbitDB peer; killed when dropped.
pub struct JsOrbitDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What it said on start: `{peer_id, addrs, identity}`.
    pub hello: Value,
}

/// The peer script, next to this crate's sources.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js/orbitdb-peer.mjs")
}

impl JsOrbitDb {
    /// Start a peer keeping its OrbitDB state in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<JsOrbitDb> {
        let script = script();
        if !script.with_file_name("node_modules/@orbitdb/core").exists() {
            bail!("OrbitDB is not installed: run scripts/setup.sh (it runs `npm ci` in interop/js)");
        }
        let mut child = Command::new("node").arg(script).arg("peer").arg(dir).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("running node")?;
        let stdin = child.stdin.take().context("the peer's stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("the peer's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let hello = serde_json::from_str(&line).with_context(|| format!("the JS peer did not start: {line:?}"))?;
        Ok(JsOrbitDb { child, stdin, stdout, hello })
    }

    /// Send one command and read its answer; an `{error}` answer is an error.
    pub fn cmd(&mut self, command: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{command}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let answer: Value = serde_json::from_str(&line).with_context(|| format!("no answer to {command}: {line:?}"))?;
        if let Some(error) = answer.get("error") {
            bail!("{command}: {error}");
        }
        Ok(answer)
    }

    /// Its first listen address.
    pub fn addr(&self) -> String {
        self.hello["addrs"][0].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for JsOrbitDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
