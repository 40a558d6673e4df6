//! A TCP proxy that injects network faults between walship and a real server.
//!
//! Faults happen at the byte level, so the client sees what a flaky link produces: a connection
//! reset in the middle of a request, a response that never arrives (after the server applied the
//! request), a response cut off midway, or a connection that goes silent. Which connection fails,
//! how, and after how many bytes comes from a seeded generator, so a failing run can be replayed.

use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How often and how hard the proxy fails.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub seed: u64,
    /// Probability that a new connection carries a fault.
    pub rate: f64,
    /// A fault triggers after a random number of bytes below this (in the chosen direction).
    pub max_trigger_bytes: u64,
    /// How long a stalled connection stays silent before the proxy closes it.
    pub stall: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 1,
            rate: 0.8,
            max_trigger_bytes: 48 * 1024,
            stall: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Reset while the client is sending its request.
    ResetRequest { after: u64 },
    /// Forward the request, swallow the response, reset.
    DropResponse,
    /// Forward part of the response, then reset.
    TruncateResponse { after: u64 },
    /// Forward part of the response, then go silent.
    Stall { after: u64 },
}

/// Faults injected so far, by kind.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub reset_request: AtomicU64,
    pub drop_response: AtomicU64,
    pub truncate_response: AtomicU64,
    pub stall: AtomicU64,
    pub connections: AtomicU64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.reset_request.load(Ordering::Relaxed)
            + self.drop_response.load(Ordering::Relaxed)
            + self.truncate_response.load(Ordering::Relaxed)
            + self.stall.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} faults over {} connections (reset during request {}, response dropped {}, response truncated {}, stalled {})",
            self.total(),
            self.connections.load(Ordering::Relaxed),
            self.reset_request.load(Ordering::Relaxed),
            self.drop_response.load(Ordering::Relaxed),
            self.truncate_response.load(Ordering::Relaxed),
            self.stall.load(Ordering::Relaxed),
        )
    }

    fn count(&self, f: Fault) {
        let c = match f {
            Fault::ResetRequest { .. } => &self.reset_request,
            Fault::DropResponse => &self.drop_response,
            Fault::TruncateResponse { .. } => &self.truncate_response,
            Fault::Stall { .. } => &self.stall,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running proxy; dropping it stops accepting and closes open connections.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    enabled: Arc<AtomicBool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`. Faults start disabled.
    pub fn start(upstream: SocketAddr, plan: FaultPlan) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fault proxy runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind fault proxy");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(FaultCounts::default());
        let enabled = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(plan.seed)));
        {
            let (counts, enabled) = (counts.clone(), enabled.clone());
            runtime.spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    let dice = Dice {
                        rng: rng.clone(),
                        enabled: enabled.clone(),
                        plan: plan.clone(),
                    };
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let _ = relay(client, upstream, dice, &counts).await;
                    });
                }
            });
        }
        FaultProxy {
            addr,
            counts,
            enabled,
            runtime: Some(runtime),
        }
    }

    /// Turns fault injection on or off for connections accepted from now on.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Decides, request by request, whether and how to fail.
struct Dice {
    rng: Arc<Mutex<rand::rngs::StdRng>>,
    enabled: Arc<AtomicBool>,
    plan: FaultPlan,
}

impl Dice {
    fn roll(&self) -> Option<Fault> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        if !rng.random_bool(self.plan.rate) {
            return None;
        }
        let request_bytes = rng.random_range(0..self.plan.max_trigger_bytes.max(1));
        // Most responses are a few hundred bytes of headers: cut them inside the headers or
        // the body alike.
        let response_bytes = match rng.random_bool(0.5) {
            true => rng.random_range(0..300),
            false => rng.random_range(0..self.plan.max_trigger_bytes.max(1)),
        };
        // Stalls are rarer: each costs a whole operation timeout.
        Some(match rng.random_range(0..20) {
            0..6 => Fault::ResetRequest {
                after: request_bytes,
            },
            6..12 => Fault::DropResponse,
            12..17 => Fault::TruncateResponse {
                after: response_bytes,
            },
            _ => Fault::Stall {
                after: response_bytes,
            },
        })
    }
}

/// Copies bytes both ways until both sides are done, or until a fault triggers. HTTP clients
/// keep connections alive, so the dice are rolled per request: a request starts when the
/// client sends after the server has answered (or first).
async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    dice: Dice,
    counts: &FaultCounts,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    let (mut up_bytes, mut down_bytes) = (0u64, 0u64);
    let (mut up_open, mut down_open) = (true, true);
    let mut in_request = false;
    let mut fault = None;
    let stall = dice.plan.stall;
    let mut b1 = vec![0u8; 16 * 1024];
    let mut b2 = vec![0u8; 16 * 1024];
    while up_open || down_open {
        tokio::select! {
            r = client.read(&mut b1), if up_open => {
                let n = r?;
                if n == 0 {
                    up_open = false;
                    let _ = server.shutdown().await;
                    continue;
                }
                if !in_request {
                    in_request = true;
                    fault = dice.roll();
                    (up_bytes, down_bytes) = (0, 0);
                }
                if let Some(f @ Fault::ResetRequest { after }) = fault {
                    if up_bytes + n as u64 > after {
                        let keep = (after - up_bytes) as usize;
                        server.write_all(&b1[..keep]).await?;
                        counts.count(f);
                        return reset(client);
                    }
                }
                up_bytes += n as u64;
                server.write_all(&b1[..n]).await?;
            }
            r = server.read(&mut b2), if down_open => {
                let n = r?;
                if n == 0 {
                    down_open = false;
                    let _ = client.shutdown().await;
                    continue;
                }
                in_request = false;
                match fault {
                    Some(f @ Fault::DropResponse) => {
                        counts.count(f);
                        return reset(client);
                    }
                    Some(f @ (Fault::TruncateResponse { after } | Fault::Stall { after }))
                        if down_bytes + n as u64 > after =>
                    {
                        let keep = (after - down_bytes) as usize;
                        client.write_all(&b2[..keep]).await?;
                        counts.count(f);
                        if matches!(f, Fault::Stall { .. }) {
                            tokio::time::sleep(stall).await;
                        }
                        return reset(client);
                    }
                    _ => {}
                }
                down_bytes += n as u64;
                client.write_all(&b2[..n]).await?;
            }
        }
    }
    Ok(())
}

/// Closes with RST rather than FIN, like a peer that went away.
fn reset(s: TcpStream) -> std::io::Result<()> {
    let _ = s.set_zero_linger();
    drop(s);
    Ok(())
}
