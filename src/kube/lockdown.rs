//! The egress lock-down of a pod's network namespace, as an nftables ruleset.
//!
//! Every outbound TCP connection of every user but credgate's is redirected
//! to credgate's transparent listener; every other outbound packet of theirs
//! is refused, but DNS to the named resolvers. Loopback stays open (the
//! agent reaches credgate's proxy port there), except credgate's admin port,
//! which only credgate's own user may reach. credgate's user is exempt from
//! all of it, so its upstream connections go out and do not loop back.
//!
//! One `inet` table covers IPv4 and IPv6 alike. The text is written as `nft`
//! lists it back, so an installed ruleset can be compared line for line.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The table credgate owns; nothing else is touched.
pub const TABLE: &str = "credgate";

/// What the lock-down allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockdown {
    /// credgate's own user: exempt.
    pub proxy_uid: u32,
    /// The transparent listener every other outbound TCP connection is
    /// redirected to (on loopback).
    pub transparent_port: u16,
    /// credgate's admin port, refused on loopback to every other user.
    pub admin_port: u16,
    /// DNS resolvers every user may reach on port 53 (UDP and TCP).
    pub dns: Vec<IpAddr>,
}

impl Lockdown {
    /// The table as `nft list table inet credgate` prints it.
    pub fn table(&self) -> String {
        let uid = self.proxy_uid;
        let dns_rules = |verdict: &str| -> String {
            let mut rules = String::new();
            for ip in &self.dns {
                let family = if ip.is_ipv4() { "ip" } else { "ip6" };
                let _ = writeln!(rules, "\t\t{family} daddr {ip} th dport 53 {verdict}");
            }
            rules
        };
        format!(
            "table inet {TABLE} {{\n\
             \tcomment \"credgate egress lock-down\"\n\
             \tchain capture {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tmeta skuid {uid} return\n\
             \t\toifname \"lo\" return\n\
             {dns_return}\
             \t\tmeta l4proto tcp redirect to :{port}\n\
             \t}}\n\
             \n\
             \tchain egress {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\tmeta skuid {uid} accept\n\
             \t\tct status dnat tcp dport {port} accept\n\
             \t\toifname \"lo\" tcp dport {admin} reject with tcp reset\n\
             \t\toifname \"lo\" accept\n\
             {dns_accept}\
             \t\tmeta l4proto tcp reject with tcp reset\n\
             \t\treject with icmpx admin-prohibited\n\
             \t}}\n\
             }}\n",
            port = self.transparent_port,
            admin = self.admin_port,
            dns_return = dns_rules("return"),
            dns_accept = dns_rules("accept"),
        )
    }

    /// The script `nft -f` runs to install (or replace) the table in one
    /// transaction: it either all applies or none of it does.
    pub fn install_script(&self) -> String {
        // Declaring the table first makes the delete succeed when it is not
        // there yet, so installing twice leaves one table.
        format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\n{}",
            self.table()
        )
    }
}

/// The script that removes the table (after [`Lockdown::install_script`]'s
/// trick, it succeeds whether or not the table is there).
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Whether `listed` (what `nft list table inet credgate` printed) is the
/// table `expected` would install: the same lines, whitespace aside.
pub fn matches(listed: &str, expected: &Lockdown) -> bool {
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect()
    };
    lines(listed) == lines(&expected.table())
}

/// The `nameserver` addresses of a `resolv.conf`.
pub fn resolv_conf_nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                // A scoped IPv6 address (fe80::1%eth0) names its zone.
                .and_then(|addr| addr.split('%').next()?.parse().ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockdown() -> Lockdown {
        Lockdown {
            proxy_uid: 2000,
            transparent_port: 15001,
            admin_port: 8081,
            dns: vec!["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
        }
    }

    #[test]
    fn the_table_exempts_credgate_redirects_tcp_and_refuses_the_rest() {
        let table = lockdown().table();
        let capture = table.split("chain egress").next().unwrap();
        let egress = table.split("chain egress").nth(1).unwrap();
        // credgate's user is exempt before anything else in both chains.
        let first_rule = |chain: &str| {
            chain
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("type") && !l.ends_with('{'))
                .unwrap()
                .to_owned()
        };
        let capture_chain = capture.split("chain capture").nth(1).unwrap();
        assert_eq!(first_rule(capture_chain), "meta skuid 2000 return");
        assert_eq!(first_rule(egress), "meta skuid 2000 accept");
        assert!(capture.contains("meta l4proto tcp redirect to :15001"));
        assert!(capture.contains("ip daddr 10.96.0.10 th dport 53 return"));
        assert!(capture.contains("ip6 daddr fd00::a th dport 53 return"));
        assert!(egress.contains("oifname \"lo\" tcp dport 8081 reject with tcp reset"));
        // The admin port is refused before loopback is opened.
        assert!(egress.find("dport 8081").unwrap() < egress.find("oifname \"lo\" accept").unwrap());
        // Whatever is left is refused: the last rule refuses everything.
        let last = egress
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && *l != "}")
            .unwrap();
        assert_eq!(last, "reject with icmpx admin-prohibited");
    }

    #[test]
    fn no_resolver_means_no_dns() {
        let table = Lockdown {
            dns: vec![],
            ..lockdown()
        }
        .table();
        assert!(!table.contains("dport 53"), "{table}");
    }

    #[test]
    fn installing_replaces_the_table_in_one_script() {
        let script = lockdown().install_script();
        assert!(script
            .starts_with("table inet credgate\ndelete table inet credgate\ntable inet credgate {"));
        assert_eq!(
            remove_script(),
            "table inet credgate\ndelete table inet credgate\n"
        );
    }

    #[test]
    fn a_listing_matches_only_the_same_table() {
        let expected = lockdown();
        let listed = expected.table().replace('\t', "    ");
        assert!(matches(&listed, &expected));
        let other = Lockdown {
            admin_port: 9090,
            ..expected.clone()
        };
        assert!(!matches(&listed, &other));
        assert!(!matches("", &expected));
        let tampered = listed.replace("\t\treject with icmpx admin-prohibited\n", "");
        assert!(!matches(
            &tampered.replace("    reject with icmpx admin-prohibited", ""),
            &expected
        ));
    }

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let text = "# generated\nsearch svc.cluster.local\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver\noptions ndots:5\nnameserver bogus\n";
        let found: Vec<String> = resolv_conf_nameservers(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["10.96.0.10", "fe80::1"]);
    }
}
