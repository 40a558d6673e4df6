//! `AWS_CA_BUNDLE`: extra trust anchors for an S3-compatible store behind a private CA.
//!
//! v0.3.13's SDK reads the variable; users of MinIO or Ceph with their own CA who switched lost
//! their backups to "certificate unknown". The SDK's own rustls client is kept (same ciphers,
//! same native roots, which `SSL_CERT_FILE`/`SSL_CERT_DIR` already replace) and the bundle's
//! certificates are added to its roots.

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use walship_core::{Error, Result};

/// The SDK's HTTPS client trusting the system roots plus every certificate in `bundle`.
pub(crate) fn client_with_bundle(bundle: &Path) -> Result<SharedHttpClient> {
    let text = std::fs::read_to_string(bundle).map_err(|e| {
        Error::config(format!(
            "AWS_CA_BUNDLE {}: cannot read it: {e}",
            bundle.display()
        ))
    })?;
    let blocks = certificate_blocks(&text);
    if blocks.is_empty() {
        return Err(Error::config(format!(
            "AWS_CA_BUNDLE {}: no usable PEM certificate in it",
            bundle.display()
        )));
    }
    let mut store = TrustStore::default();
    for b in blocks {
        store.add_pem_certificate(b.into_bytes());
    }
    let ctx = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| Error::config(format!("AWS_CA_BUNDLE {}: {e}", bundle.display())))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(ctx)
        .build_https())
}

/// Each `CERTIFICATE` block of a PEM bundle that rustls accepts as a trust anchor, verbatim.
/// The SDK panics on a block it cannot parse, so only proven ones are handed over; others
/// (keys, comments, a damaged block) are skipped.
fn certificate_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        let block = format!("{}\n", &rest[b..b + e + END.len()]);
        rest = &rest[b + e + END.len()..];
        let Ok(der) = CertificateDer::from_pem_slice(block.as_bytes()) else {
            continue;
        };
        if rustls::RootCertStore::empty().add(der).is_ok() {
            out.push(block);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_bundles_are_config_errors_not_panics() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.pem");
        let e = client_with_bundle(&p).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = client_with_bundle(&p).unwrap_err().to_string();
        assert!(e.contains("no usable PEM certificate"), "{e}");
    }
}
