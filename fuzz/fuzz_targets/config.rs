//! A config file, with `${VAR}` expansion on: YAML, keys, durations, sizes, paths, URLs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = walship_config::expand_env(s);
    if let Ok((cfg, _)) = walship_config::Config::parse(s, std::path::Path::new("fuzz.yml"), true) {
        for db in &cfg.dbs {
            for r in &db.replicas {
                let _ = r.target();
            }
        }
    }
});
