//! `walship-codec-bench [TXS] [SEGMENT_BYTES]`: CPU of compressing WAL segments, walship's LZ4
//! frame encoder against lz4_flex's `FrameEncoder` with the same frame description (what walship
//! used before 2026-12-07), on the WAL of the test suite's mixed workload.
//!
//! Why a program of its own: LZ4 was the largest single item of walship's CPU at a 1 s
//! sync-interval (issue 18), and the replication benchmark's figures move by several percent
//! between runs, too much to see one component change. Here the same bytes go through both
//! encoders three times each, in one process, and every output is decoded and compared.
//!
//! Defaults: 12,000 transactions of the `steady` and `lag` workloads' writer
//! (`Writer::tx_small`: a random key into one table or an upsert into another), never
//! checkpointed, cut into 1.5 MB segments.

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use std::io::{Read, Write};
use std::process::ExitCode;
use walship_core::codec;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| -> Option<usize> {
        match args.get(i) {
            None => Some(default),
            Some(s) => s.parse().ok().filter(|&n| n > 0),
        }
    };
    let (Some(txs), Some(segment)) = (num(0, 12_000), num(1, 1_500_000)) else {
        eprintln!("usage: walship-codec-bench [TXS] [SEGMENT_BYTES] (positive integers)");
        return ExitCode::from(1);
    };
    let wal = match wal_of(txs) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("walship-codec-bench: cannot build the WAL: {e}");
            return ExitCode::from(1);
        }
    };
    let mb = wal.len() as f64 / 1e6;
    println!(
        "WAL of {txs} transactions: {mb:.1} MB in {} segments of up to {segment} bytes",
        wal.len().div_ceil(segment)
    );
    println!("| encoder | round | ms of CPU per MB | MB/s | compressed / raw |");
    println!("|---|---:|---:|---:|---:|");
    for round in 1..=3 {
        for (name, encode) in [
            ("walship codec::Lz4Encoder", walship as fn(&[u8]) -> Vec<u8>),
            ("lz4_flex FrameEncoder", library),
        ] {
            let t0 = cpu_now();
            let outs: Vec<Vec<u8>> = wal.chunks(segment).map(encode).collect();
            let secs = cpu_now() - t0;
            let packed: usize = outs.iter().map(Vec::len).sum();
            for (raw, out) in wal.chunks(segment).zip(&outs) {
                let mut back = Vec::with_capacity(raw.len());
                if codec::decoder(&out[..]).read_to_end(&mut back).is_err() || back != raw {
                    eprintln!("walship-codec-bench: {name} output does not decode to its input");
                    return ExitCode::from(1);
                }
            }
            println!(
                "| {name} | {round} | {:.3} | {:.0} | {:.3} |",
                secs * 1e3 / mb,
                mb / secs,
                packed as f64 / wal.len() as f64
            );
        }
    }
    ExitCode::SUCCESS
}

fn walship(seg: &[u8]) -> Vec<u8> {
    codec::compress(seg)
}

fn library(seg: &[u8]) -> Vec<u8> {
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent)
        .content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    for c in seg.chunks(64 * 1024) {
        enc.write_all(c).expect("writes to a Vec");
    }
    enc.finish().expect("writes to a Vec")
}

/// Thread CPU time in seconds: what the encoders cost, not what else the machine did meanwhile.
fn cpu_now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The `-wal` file after `txs` transactions of the benchmark's steady writer, never checkpointed.
fn wal_of(txs: usize) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("codec.db");
    let mut w = walship_integration::Writer::new(&db, 18);
    w.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    for _ in 0..txs {
        w.tx_small();
    }
    let wal = std::fs::read(dir.path().join("codec.db-wal"))?;
    drop(w);
    Ok(wal)
}
