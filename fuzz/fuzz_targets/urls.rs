//! Replica URLs as `replicate DB URL` and `url:` take them, through every backend's parser.
#![no_main]
use libfuzzer_sys::fuzz_target;
use walship_core::registry::ReplicaSettings;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = walship_config::ReplicaConfig::from_url(s) {
        let _ = r.target();
    }
    let _ = walship_config::file_url_path(s);
    let _ = walship_s3::parse_host(s);
    let settings = |kind: &str| ReplicaSettings {
        name: kind.into(),
        kind: kind.into(),
        url: Some(s.to_string()),
        ..Default::default()
    };
    let _ = walship_s3::S3Config::from_settings(&settings("s3"), &|_| None);
    let _ = walship_sftp::SftpConfig::from_settings(&settings("sftp"), None);
    let _ = walship_gcs::GcsConfig::from_settings(&settings("gcs"), &|_| None);
    let _ = walship_abs::AbsConfig::from_settings(&settings("abs"), &|_| None);
});
