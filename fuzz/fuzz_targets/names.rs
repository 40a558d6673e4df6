//! Object names from a listing: generations, snapshot indexes, WAL segment index and offset.
#![no_main]
use libfuzzer_sys::fuzz_target;
use walship_core::layout;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(e) = layout::parse_key(s) {
        let _ = format!("{e:?}");
    }
    let _ = layout::parse_snapshot_name(s);
    let _ = layout::parse_wal_segment_name(s);
    let _ = layout::is_generation(s);
    let _ = layout::join(s, s);
});
