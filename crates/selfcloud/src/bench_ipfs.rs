//! `selfcloud bench ipfs`: UnixFS add and cat throughput beside the machine's SHA-256 limit
//! (`openssl speed -evp sha256`) and the JavaScript importer on the same file, in the same run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use selfcloud_ipfs::{FileImporter, NullSink, Profile};

const MIB: f64 = 1024.0 * 1024.0;
/// Runs of each compared add.
const RUNS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A file of `bytes` pseudo-random bytes (xorshift; incompressible, no repeated chunks).
pub(crate) fn make_file(path: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// SHA-256 bytes/s at 256 KiB blocks from `openssl speed`, on one core or (`processes` > 1) on
/// that many at once.
fn openssl_sha256(processes: usize) -> anyhow::Result<f64> {
    let mut cmd = Command::new("openssl");
    cmd.arg("speed");
    if processes > 1 {
        cmd.args(["-multi", &processes.to_string()]);
    }
    let out = cmd.args(["-evp", "sha256", "-bytes", "262144", "-seconds", "2"]).output().context("running openssl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rfind(|l| l.contains("sha256") || l.starts_with("SHA256")).context("no sha256 line from openssl")?;
    let field = line.split_whitespace().last().context("empty openssl line")?;
    let kb: f64 = field.trim_end_matches('k').parse().context("parsing openssl's figure")?;
    Ok(kb * 1000.0)
}

fn stream_into(profile: Profile, path: &Path, sink: &mut impl selfcloud_ipfs::BlockSink) -> anyhow::Result<(selfcloud_ipfs::Imported, f64)> {
    let file = std::fs::File::open(path)?;
    let start = Instant::now();
    let mut importer = FileImporter::new(profile, sink);
    // As `ipfs add` of a local file: every core reads chunks straight into leaf blocks and hashes them.
    importer.read_file(&file)?;
    let root = importer.finish()?;
    Ok((root, start.elapsed().as_secs_f64()))
}

pub fn run(dir: &Path, mib: u64) -> anyhow::Result<()> {
    let bytes = mib << 20;
    let path = dir.join("bench.bin");
    make_file(&path, bytes)?;
    // Warm the page cache so every contender reads the file from memory.
    std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
    let size = bytes as f64 / MIB;
    println!("bench ipfs: a {mib} MiB file, profile unixfs-v0-2015 unless noted");

    let sha = openssl_sha256(1);
    match &sha {
        Ok(rate) => println!("{:<44} {:>8.0} MiB/s", "SHA-256 limit (openssl speed -evp sha256)", rate / MIB),
        Err(e) => println!("{:<44} skipped: {e}", "SHA-256 limit (openssl)"),
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        match openssl_sha256(cores) {
            Ok(rate) => println!("{:<44} {:>8.0} MiB/s", format!("  on all {cores} cores (openssl speed -multi {cores})"), rate / MIB),
            Err(e) => println!("{:<44} skipped: {e}", "  on all cores"),
        }
    }
    let pct = |rate: f64| sha.as_ref().map(|s| format!("{:.0}% of SHA-256", 100.0 * rate / s)).unwrap_or_default();

    // The host is noisy: ours and the JS importer run in turn, three times each, and each side's
    // median is compared, so a slow spell of the host falls on both.
    let (mut rates, mut js_rates, mut js_error) = (Vec::new(), Vec::new(), None);
    let mut root = None;
    for _ in 0..RUNS {
        let (r, secs) = stream_into(selfcloud_ipfs::profile::UNIXFS_V0_2015, &path, &mut NullSink)?;
        rates.push(size / secs);
        root = Some(r);
        match js_importer(&path) {
            Ok((cid, secs)) => {
                anyhow::ensure!(cid == r.cid.to_string(), "the JS importer made {cid}, we made {}", r.cid);
                js_rates.push(size / secs);
            }
            Err(e) => js_error = Some(e),
        }
    }
    let root = root.context("no run")?;
    let ours = median(&mut rates);
    println!("{:<44} {:>8.0} MiB/s   {}   {}   (median of {RUNS})", "add, hashing+encoding only", ours, pct(ours * MIB), root.cid);
    match js_error {
        None => {
            let js = median(&mut js_rates);
            println!("{:<44} {:>8.0} MiB/s   the same CID   ours is {:.1}×   (median of {RUNS}, run in turn with ours)", "JS ipfs-unixfs-importer (node)", js, ours / js);
        }
        Some(e) => println!("{:<44} skipped: {e}", "JS ipfs-unixfs-importer"),
    }
    let (root1, secs1) = stream_into(selfcloud_ipfs::profile::UNIXFS_V1_2025, &path, &mut NullSink)?;
    println!("{:<44} {:>8.0} MiB/s   {}   {}", "add, unixfs-v1-2025, hashing only", size / secs1, pct(size / secs1 * MIB), root1.cid);

    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir)?;
    let key = selfcloud_core::seal::Key::from_bytes(selfcloud_core::random_bytes::<32>());
    let store = selfcloud_instance::store::Store::open(&store_dir.join("store.redb"), key)?;
    let start = Instant::now();
    let mut writer = store.block_writer(0)?;
    let (stored, _) = stream_into(selfcloud_ipfs::profile::UNIXFS_V0_2015, &path, &mut writer)?;
    let imported = start.elapsed().as_secs_f64();
    writer.finish(None)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>8.0} MiB/s   {}   (sealed, written to packs, fsync'd: {:.2} s importing, {:.2} s in the final sync and commit)",
        "add into the encrypted store",
        size / secs,
        pct(size / secs * MIB),
        imported,
        secs - imported
    );
    let on_disk = disk_bytes(&store_dir)?;
    println!("{:<44} {:>8.0} MiB     for the {mib} MiB file ({:.2}×)", "  store on disk (store.redb + store.packs)", on_disk as f64 / MIB, on_disk as f64 / bytes as f64);

    let start = Instant::now();
    let mut read = 0u64;
    // As a download is served: blocks read, opened and checked on two threads ahead.
    selfcloud_ipfs::export::read_file_parallel(&store, stored.cid, 2, |piece| {
        read += piece.len() as u64;
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(read == bytes, "cat returned {read} of {bytes} bytes");
    println!("{:<44} {:>8.0} MiB/s", "cat from the encrypted store", size / secs);

    println!("{:<44} see `selfcloud bench bitswap`", "Bitswap 64 MiB");
    Ok(())
}

/// Bytes of the files under `dir`, as allocated on disk.
fn disk_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { disk_bytes(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}

fn js_importer(path: &Path) -> anyhow::Result<(String, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js/unixfs-import.mjs");
    anyhow::ensure!(script.exists(), "interop/js is not next to this binary's sources");
    let out = Command::new("node").arg(&script).arg("unixfs-v0-2015").arg(path).output().context("running node (scripts/interop-deps.sh installs the importer)")?;
    anyhow::ensure!(out.status.success(), "node failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default());
    let entry = lines.next().context("no entry from the JS importer")?;
    let summary = lines.next().context("no summary from the JS importer")?;
    Ok((entry["cid"].as_str().unwrap_or("").to_owned(), summary["seconds"].as_f64().context("no seconds")?))
}
