//! Loopback pod IPs: each pod gets its own 127.1.x.y (all of 127/8 routes to `lo`).

use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Hands out addresses from 127.1.0.2 – 127.1.255.254, round robin, never two at once.
#[derive(Debug, Default)]
pub struct IpPool {
    next: u32,
    by_uid: HashMap<String, Ipv4Addr>,
}

const SIZE: u32 = 1 << 16;

fn addr(n: u32) -> Ipv4Addr {
    Ipv4Addr::new(127, 1, ((n >> 8) & 0xff) as u8, (n & 0xff) as u8)
}

fn usable(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 127 && o[1] == 1 && o[3] != 0 && o[3] != 255 && !(o[2] == 0 && o[3] == 1)
}

impl IpPool {
    /// The address of pod `uid`, allocating one (or adopting `preferred`, e.g. from the
    /// pod's status after an agent restart) if it has none yet.
    pub fn allocate(&mut self, uid: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Some(*ip);
        }
        if let Some(ip) = preferred.filter(|ip| usable(*ip) && !self.in_use(*ip)) {
            self.by_uid.insert(uid.to_string(), ip);
            return Some(ip);
        }
        for _ in 0..SIZE {
            let candidate = addr(self.next % SIZE);
            self.next = (self.next + 1) % SIZE;
            if usable(candidate) && !self.in_use(candidate) {
                self.by_uid.insert(uid.to_string(), candidate);
                return Some(candidate);
            }
        }
        None
    }

    /// Returns the address of pod `uid` to the pool.
    pub fn release(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }

    fn in_use(&self, ip: Ipv4Addr) -> bool {
        self.by_uid.values().any(|v| *v == ip)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn unique_stable_and_adopting() {
        let mut p = IpPool::default();
        let a = p.allocate("a", None).unwrap();
        let b = p.allocate("b", None).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(p.allocate("a", None), Some(a));
        let c = p.allocate("c", Some(Ipv4Addr::new(127, 1, 7, 7))).unwrap();
        assert_eq!(c, Ipv4Addr::new(127, 1, 7, 7));
        // A preferred address already in use, or outside the range, is not adopted.
        assert_ne!(p.allocate("d", Some(a)).unwrap(), a);
        assert_ne!(
            p.allocate("e", Some(Ipv4Addr::new(10, 0, 0, 1))).unwrap(),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        p.release("a");
        assert!(!p.by_uid.contains_key("a"));
    }
}
