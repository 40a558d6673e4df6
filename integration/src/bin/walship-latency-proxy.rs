//! `walship-latency-proxy LISTEN_PORT TARGET_ADDR DELAY_MS`: a TCP proxy on 127.0.0.1 that
//! delays every chunk a client sends by DELAY_MS before it reaches TARGET_ADDR (about one round
//! trip per request), for measuring restores through an object store's latency by hand. Prints
//! the counts every 10 s; stop it with Ctrl-C.

use std::sync::atomic::Ordering;
use std::time::Duration;
use walship_integration::latency::LatencyProxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, target, delay] = &args[..] else {
        eprintln!("usage: walship-latency-proxy LISTEN_PORT TARGET_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let (Ok(port), Ok(target), Ok(delay)) = (
        port.parse::<u16>(),
        target.parse::<std::net::SocketAddr>(),
        delay.parse::<u64>(),
    ) else {
        eprintln!("usage: walship-latency-proxy LISTEN_PORT TARGET_ADDR(IP:PORT) DELAY_MS");
        std::process::exit(2);
    };
    let p =
        LatencyProxy::start_on(port, target, Duration::from_millis(delay)).unwrap_or_else(|e| {
            eprintln!("walship-latency-proxy: {e}");
            std::process::exit(1);
        });
    eprintln!(
        "127.0.0.1:{} -> {target}, +{delay} ms per client chunk",
        p.addr().port()
    );
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let c = p.counts();
        eprintln!(
            "connections {} requests {} most delayed together {}",
            c.connections.load(Ordering::Relaxed),
            c.writes.load(Ordering::Relaxed),
            c.most_delayed.load(Ordering::Relaxed)
        );
    }
}
