//! The file format's own ceiling, end to end in one process: a file is prepared (plaintext hash,
//! encryption, outboard), then moved from a provider to a receiver over an in-memory pipe
//! (encrypt + encode + validate on one side; decode + verify + write + plaintext hash on the
//! other, with commits synced to disk as in production), then saved (decrypt + hash + write +
//! fsync + rename). Each end runs on its own thread; their CPU time is measured per thread.
//!
//! Run: `cargo run --release -p dopus-bench-files -- [--size-mib 4096] [--pipe-kib 1024]`
//! Results go to stdout as Markdown; record them in docs/benchmarks.md with `uptime`.
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use anyhow::{Context, Result, bail};
use clap::Parser;
use dopus_core::store::{
    ConversationId, FileTransfer, TransferDirection, TransferId, TransferState,
};
use dopus_core::transfer::{CommitPolicy, DownloadConfig, HolderId, LinkConfig, PlannerConfig};
use dopus_files::{BlobDir, BlobNode, MemoryPipe, NodeStats, Shelf, prepare, save_blob};
use dopus_proto::transfer::{
    FILE_FORMAT_VERSION, FileKey, FileManifest, FileNonce, GroupSet, MAX_BLOB_MESSAGE,
};
use dopus_types::Timestamp;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "DiscordOpus file transfer benchmark (format ceiling, in-process)")]
struct Args {
    /// File size in MiB.
    #[arg(long, default_value_t = 4096)]
    size_mib: u64,
    /// Bytes in flight per pipe direction (the transfer's share of a send buffer), KiB.
    #[arg(long, default_value_t = 1024)]
    pipe_kib: usize,
    /// Requests in flight per holder.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Commit (sync + store) every this many MiB.
    #[arg(long, default_value_t = 16)]
    commit_mib: u64,
    /// Skip the save step.
    #[arg(long)]
    no_save: bool,
    /// Only time the primitives (ChaCha20, BLAKE3) in memory, then stop.
    #[arg(long)]
    components_only: bool,
    /// Where to put the files (a temporary directory under /var/tmp by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// CPU seconds (user + system) of the calling thread, from /proc (10 ms resolution).
fn thread_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn write_random_file(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            chunk.copy_from_slice(&s.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.into_inner()?.sync_all()?;
    Ok(())
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn per_gib(cpu: f64, bytes: u64) -> f64 {
    cpu / (bytes as f64 / (1u64 << 30) as f64)
}

struct End {
    cpu: f64,
    stats: NodeStats,
    state: TransferState,
}

/// CPU seconds per GiB of the primitives, single-threaded, over a buffer that fits the cache
/// poorly (64 MiB), best of three: what the format's own work costs per byte.
fn components() {
    let mut buf = vec![0u8; 64 << 20];
    let cipher = dopus_files::FileCipher::new(&FileKey([1; 32]), FileNonce([2; 12]));
    let time = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let c = thread_cpu();
                let t = Instant::now();
                f();
                (t.elapsed().as_secs_f64(), thread_cpu() - c)
            })
            .fold((f64::MAX, f64::MAX), |a, b| (a.0.min(b.0), a.1.min(b.1)))
    };
    let gib = buf.len() as f64 / (1u64 << 30) as f64;
    let (w, _) = time(&mut || {
        let _ = cipher.apply(0, &mut buf);
    });
    println!(
        "| ChaCha20 (chacha20 crate), 64 MiB in memory | {:.2} s/GiB wall | {:.0} MiB/s |",
        w / gib,
        64.0 / w
    );
    let (w, _) = time(&mut || {
        std::hint::black_box(blake3::hash(&buf));
    });
    println!(
        "| BLAKE3 (one thread), 64 MiB in memory | {:.2} s/GiB wall | {:.0} MiB/s |",
        w / gib,
        64.0 / w
    );
    let (w, _) = time(&mut || {
        let mut h = blake3::Hasher::new();
        for c in buf.chunks(16 << 10) {
            h.update(c);
        }
        std::hint::black_box(h.finalize());
    });
    println!(
        "| BLAKE3 fed 16 KiB at a time (as groups are verified) | {:.2} s/GiB wall | {:.0} MiB/s |",
        w / gib,
        64.0 / w
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let size = args.size_mib << 20;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    println!();
    println!("| primitive | cost | rate |");
    println!("| --- | --- | --- |");
    components();
    println!();
    if args.components_only {
        return Ok(());
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let tmp = tempfile::Builder::new()
        .prefix("dopus-bench-files")
        .tempdir_in(&base)?;
    let sender_dir = BlobDir::new(tmp.path().join("sender"))?;
    let receiver_dir = BlobDir::new(tmp.path().join("receiver"))?;
    let source = tmp.path().join("source.bin");

    let t = Instant::now();
    write_random_file(&source, size)?;
    println!(
        "wrote a {} MiB file in {:.1} s (not measured below; it stays in the page cache)",
        args.size_mib,
        t.elapsed().as_secs_f64()
    );

    // --- prepare ---
    let mut key = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut key).context("random")?;
    getrandom::fill(&mut nonce).context("random")?;
    let (key, nonce) = (FileKey(key), FileNonce(nonce));
    let rss0 = status_kib("VmRSS:");
    let cpu0 = thread_cpu();
    let t = Instant::now();
    let ob_tmp = sender_dir.path().join("preparing.obao");
    let prepared = prepare(&source, &key, nonce, &ob_tmp)?;
    let prepare_secs = t.elapsed().as_secs_f64();
    let prepare_cpu = thread_cpu() - cpu0;
    std::fs::rename(&ob_tmp, sender_dir.outboard_path(&prepared.blob))?;
    let manifest = FileManifest {
        version: FILE_FORMAT_VERSION,
        blob: prepared.blob,
        size,
        key,
        nonce,
        name: "source.bin".into(),
        mime: "application/octet-stream".into(),
        plain_blake3: prepared.plain,
        dimensions: None,
        duration_ms: None,
        thumbnail: None,
    };

    // --- transfer ---
    let config = DownloadConfig {
        planner: PlannerConfig {
            window: args.window,
            ..PlannerConfig::default()
        },
        commit: CommitPolicy {
            every_bytes: args.commit_mib << 20,
            every_ms: 2_000,
        },
    };
    let (pipe_s, pipe_r) = MemoryPipe::pair(args.pipe_kib << 10, MAX_BLOB_MESSAGE);
    let rss1 = status_kib("VmRSS:");
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let now = move || Timestamp(start.elapsed().as_millis() as u64);

    let sender = {
        let done = done.clone();
        let dir = sender_dir.clone();
        let manifest = manifest.clone();
        let stamp = prepared.stamp;
        let source = source.clone();
        std::thread::spawn(move || -> End {
            let cpu0 = thread_cpu();
            let mut shelf = Shelf::new(dir.clone());
            shelf.add_file(&manifest, source, stamp, None);
            let mut node: BlobNode<MemoryPipe, Shelf> =
                BlobNode::new(shelf, dir, config, LinkConfig::default());
            let wait = pipe_s.clone_waiter();
            node.connect(HolderId(100), pipe_s);
            while !done.load(Ordering::Relaxed) {
                if !node.step(now()) {
                    wait.wait(Duration::from_millis(1));
                }
            }
            End {
                cpu: thread_cpu() - cpu0,
                stats: node.stats(),
                state: TransferState::Done,
            }
        })
    };
    let receiver = {
        let done = done.clone();
        let dir = receiver_dir.clone();
        let manifest = manifest.clone();
        std::thread::spawn(move || -> End {
            let cpu0 = thread_cpu();
            let mut node: BlobNode<MemoryPipe, Shelf> =
                BlobNode::new(Shelf::new(dir.clone()), dir, config, LinkConfig::default());
            let wait = pipe_r.clone_waiter();
            node.connect(HolderId(1), pipe_r);
            let id = TransferId(uuid::Uuid::from_u128(1));
            let transfer = FileTransfer {
                id,
                conversation: ConversationId::Direct(dopus_types::UserId::from_key(
                    dopus_types::Ed25519Key::from_bytes(&[
                        0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a, 0x92, 0xb7, 0x0a, 0xa7,
                        0x4d, 0x1b, 0x7e, 0xbc, 0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c,
                        0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4, 0x66, 0x0c,
                    ])
                    .expect("the public key of RFC 8032's test 2 is valid"),
                )),
                message: None,
                direction: TransferDirection::Incoming,
                manifest,
                state: TransferState::Queued,
                reason: None,
                verified: GroupSet::new(),
                source: None,
                saved_path: None,
                created_at: now(),
                updated_at: now(),
            };
            let mut state = TransferState::Queued;
            if node.start_download(now(), &transfer).is_ok() {
                loop {
                    let progressed = node.step(now());
                    let _ = node.take_outputs();
                    state = node
                        .download(&id)
                        .map_or(TransferState::Failed, |d| d.state());
                    if state.is_final() {
                        break;
                    }
                    if !progressed {
                        wait.wait(Duration::from_millis(1));
                    }
                }
            }
            done.store(true, Ordering::Relaxed);
            End {
                cpu: thread_cpu() - cpu0,
                stats: node.stats(),
                state,
            }
        })
    };
    let mut rss_max = status_kib("VmRSS:");
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        rss_max = rss_max.max(status_kib("VmRSS:"));
    }
    let r = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let transfer_secs = start.elapsed().as_secs_f64();
    let s = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    if r.state != TransferState::Done {
        bail!("the transfer ended {:?}", r.state);
    }

    // --- save ---
    let save = if args.no_save {
        None
    } else {
        let out = tmp.path().join("saved");
        std::fs::create_dir_all(&out)?;
        let cpu0 = thread_cpu();
        let t = Instant::now();
        let path = save_blob(&receiver_dir.data_path(&manifest.blob), &manifest, &out)?;
        let secs = t.elapsed().as_secs_f64();
        let cpu = thread_cpu() - cpu0;
        if std::fs::metadata(&path)?.len() != size {
            bail!("saved file has the wrong size");
        }
        Some((secs, cpu))
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!();
    println!("| step | wall | MiB/s | CPU s/GiB |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| prepare (read, plaintext hash, encrypt, outboard) | {prepare_secs:.2} s | {:.0} | {:.2} |",
        mib_s(size, prepare_secs),
        per_gib(prepare_cpu, size)
    );
    println!(
        "| transfer, end to end | {transfer_secs:.2} s | **{:.0}** | |",
        mib_s(size, transfer_secs)
    );
    println!(
        "| — provider (read, encrypt, validate, encode, frame) | | | {:.2} |",
        per_gib(s.cpu, size)
    );
    println!(
        "| — receiver (decode, verify, write, outboard, plaintext hash, synced commits) | | | {:.2} |",
        per_gib(r.cpu, size)
    );
    if let Some((secs, cpu)) = save {
        println!(
            "| save (read, decrypt, hash, write, fsync, rename) | {secs:.2} s | {:.0} | {:.2} |",
            mib_s(size, secs),
            per_gib(cpu, size)
        );
    }
    println!();
    println!(
        "bytes on the wire {} ({:.2} % over the file), {} messages, {} requests answered",
        r.stats.received_bytes,
        (r.stats.received_bytes as f64 / size as f64 - 1.0) * 100.0,
        s.stats.sent_messages,
        s.stats.answered
    );
    println!(
        "RSS before prepare {} MiB, before the transfer {} MiB, highest during it {} MiB: growth {} MiB",
        rss0 / 1024,
        rss1 / 1024,
        rss_max / 1024,
        rss_max.saturating_sub(rss1) / 1024
    );
    println!(
        "peak RSS of the whole run (VmHWM, prepare and save included): {} MiB",
        status_kib("VmHWM:") / 1024
    );
    println!("load average at end: {}", load.trim());
    Ok(())
}
