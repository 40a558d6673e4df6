//! A TLS front for a plain-HTTP test server, with a self-signed certificate: what a self-hosted
//! MinIO with its own certificate looks like to walship (`skip-verify`).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

pub struct TlsFront {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    /// Terminates TLS on a free port of 127.0.0.1 and forwards the plain bytes to `upstream`.
    /// The certificate (for `localhost` and 127.0.0.1) is made with the `openssl` CLI in `dir`.
    pub fn start(upstream: SocketAddr, dir: &Path) -> TlsFront {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]);
        Self::serve(upstream, &cert, &key)
    }

    /// Like [`TlsFront::start`], with a certificate issued by a private CA made in `dir`, whose
    /// certificate is `dir/ca.pem`: a MinIO or Ceph behind a company CA.
    pub fn start_with_private_ca(upstream: SocketAddr, dir: &Path) -> TlsFront {
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (ca, ca_key) = (p("ca.pem"), p("ca-key.pem"));
        a.extend(["-days", "2", "-subj", "/CN=walship test CA"]);
        a.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        a.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        a.extend(["-keyout", &ca_key, "-out", &ca]);
        openssl(&a);
        let (csr, key, cert) = (p("leaf.csr"), p("key.pem"), p("cert.pem"));
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr]);
        openssl(&a);
        let ext = p("leaf.ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        Self::serve(upstream, Path::new(&cert), Path::new(&key))
    }

    fn serve(upstream: SocketAddr, cert: &Path, key: &Path) -> TlsFront {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("read cert.pem")
            .collect::<Result<_, _>>()
            .expect("parse cert.pem");
        let key = PrivateKeyDer::from_pem_file(key).expect("parse key.pem");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to do.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        TlsFront {
            addr,
            runtime: Some(runtime),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn openssl(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        o.status.success(),
        "openssl {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&o.stderr)
    );
}
