//! known_hosts files and pinned fingerprints: markers, patterns, hashed names, keys.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The first line names the host looked up; the rest is the file.
    let (host, text) = s.split_once('\n').unwrap_or(("example.com", s));
    let port = if host.len() % 2 == 0 { 22 } else { 2222 };
    walship_sftp::fuzzing::known_hosts(text, host, port);
});
