//! Loopback pod IPs: each pod gets its own 127.N.x.y (all of 127/8 routes to `lo`).
//! N is fixed per agent (derived from its state dir), so two local clusters on one
//! machine are unlikely to hand out the same addresses.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
use std::path::Path;

/// Hands out addresses from 127.N.0.2 – 127.N.255.254, round robin, never two at once.
#[derive(Debug)]
pub struct IpPool {
    octet: u8,
    next: u32,
    by_uid: HashMap<String, Ipv4Addr>,
}

const SIZE: u32 = 1 << 16;

/// The second octet for an agent with this state dir (1..=254).
pub fn octet_for(state_dir: &Path) -> u8 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut h);
    (h.finish() % 254) as u8 + 1
}

impl IpPool {
    /// A pool handing out 127.`octet`.x.y.
    pub fn new(octet: u8) -> Self {
        Self {
            octet: octet.clamp(1, 254),
            next: 0,
            by_uid: HashMap::new(),
        }
    }

    fn addr(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::new(127, self.octet, ((n >> 8) & 0xff) as u8, (n & 0xff) as u8)
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 127 && o[1] == self.octet && o[3] != 0 && o[3] != 255 && !(o[2] == 0 && o[3] == 1)
    }

    /// The address of pod `uid`, allocating one (or adopting `preferred`, e.g. from the
    /// pod's status after an agent restart) if it has none yet.
    pub fn allocate(&mut self, uid: &str, preferred: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Some(*ip);
        }
        if let Some(ip) = preferred.filter(|ip| self.usable(*ip) && !self.in_use(*ip)) {
            self.by_uid.insert(uid.to_string(), ip);
            return Some(ip);
        }
        for _ in 0..SIZE {
            let candidate = self.addr(self.next % SIZE);
            self.next = (self.next + 1) % SIZE;
            if self.usable(candidate) && !self.in_use(candidate) {
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
        let mut p = IpPool::new(1);
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
        let o = octet_for(Path::new("/some/state"));
        assert!((1..=254).contains(&o));
        assert_eq!(o, octet_for(Path::new("/some/state")));
        assert_eq!(IpPool::new(o).allocate("x", None).unwrap().octets()[1], o);
    }
}
