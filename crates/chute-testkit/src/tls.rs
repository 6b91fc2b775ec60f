//! An HTTPS endpoint in front of a plain-HTTP test server, with a certificate
//! issued by a private CA made for the test: what a MinIO or Ceph deployment
//! behind its own CA looks like to a client.
//!
//! The CA and the server certificate are made by the `openssl` command at test
//! time (no key material lives in the repository); the forwarder terminates TLS
//! with rustls and copies bytes both ways to the backend.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A private CA and a server certificate it signed for `127.0.0.1` and
/// `localhost`, as PEM files in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes a fresh CA and server certificate with `openssl`.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails: the test cannot run without it.
    #[must_use]
    pub fn generate() -> TestCa {
        let dir = tempfile::tempdir().expect("temporary directory for the test CA");
        let ext = dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=chute test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestCa { dir }
    }

    /// The CA's certificate: the bundle a client must trust.
    #[must_use]
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn server_config(&self) -> io::Result<rustls::ServerConfig> {
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        let certs = CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))
            .map_err(|e| invalid(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key"))
            .map_err(|e| invalid(&e))?;
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (needed to make the test CA; install the openssl command)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS-terminating forwarder on loopback; stops when dropped.
pub struct TlsFront {
    addr: SocketAddr,
    ca: TestCa,
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Listens on a free loopback port and forwards every connection, once its
    /// TLS handshake is done, to `backend` in plain TCP.
    pub async fn start(backend: SocketAddr) -> io::Result<TlsFront> {
        let ca = TestCa::generate();
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()?));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake;
                    // that is what the tests check, not an error here.
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(TlsFront { addr, ca, task })
    }

    /// `https://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM file of the CA that signed this endpoint's certificate.
    #[must_use]
    pub fn ca_bundle(&self) -> PathBuf {
        self.ca.ca_pem()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
