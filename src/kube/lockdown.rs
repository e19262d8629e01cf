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

/// An address family, for the iptables fallback (one ruleset each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`
    V4,
    /// `ip6tables`
    V6,
}

/// The chain in the `nat` table's `OUTPUT` of the iptables fallback.
pub const CAPTURE_CHAIN: &str = "CREDGATE_CAPTURE";
/// The chain in the `filter` table's `OUTPUT` of the iptables fallback.
pub const EGRESS_CHAIN: &str = "CREDGATE_EGRESS";

impl Lockdown {
    /// The rules of the iptables fallback for `family`, as `iptables-save`
    /// prints them, by table: the same lock-down as [`Lockdown::table`], in
    /// two chains of credgate's own.
    fn iptables_tables(&self, family: Family) -> [(&'static str, &'static str, Vec<String>); 2] {
        let uid = self.proxy_uid;
        let port = self.transparent_port;
        let dns: Vec<String> = self
            .dns
            .iter()
            .filter(|ip| ip.is_ipv4() == (family == Family::V4))
            .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        let dns_rules = |chain: &str, verdict: &str| -> Vec<String> {
            dns.iter()
                .flat_map(|net| {
                    ["udp", "tcp"].map(|proto| {
                        format!("-A {chain} -d {net} -p {proto} -m {proto} --dport 53 -j {verdict}")
                    })
                })
                .collect()
        };
        let mut capture = vec![
            format!("-A {CAPTURE_CHAIN} -m owner --uid-owner {uid} -j RETURN"),
            format!("-A {CAPTURE_CHAIN} -o lo -j RETURN"),
        ];
        capture.extend(dns_rules(CAPTURE_CHAIN, "RETURN"));
        capture.push(format!(
            "-A {CAPTURE_CHAIN} -p tcp -j REDIRECT --to-ports {port}"
        ));
        let mut egress = vec![
            format!("-A {EGRESS_CHAIN} -m owner --uid-owner {uid} -j ACCEPT"),
            format!(
                "-A {EGRESS_CHAIN} -p tcp -m tcp --dport {port} -m conntrack --ctstate DNAT -j ACCEPT"
            ),
            format!(
                "-A {EGRESS_CHAIN} -o lo -p tcp -m tcp --dport {} -j REJECT --reject-with tcp-reset",
                self.admin_port
            ),
            format!("-A {EGRESS_CHAIN} -o lo -j ACCEPT"),
        ];
        egress.extend(dns_rules(EGRESS_CHAIN, "ACCEPT"));
        egress.push(format!(
            "-A {EGRESS_CHAIN} -p tcp -j REJECT --reject-with tcp-reset"
        ));
        egress.push(format!(
            "-A {EGRESS_CHAIN} -j REJECT --reject-with {}",
            match family {
                Family::V4 => "icmp-admin-prohibited",
                Family::V6 => "icmp6-adm-prohibited",
            }
        ));
        [
            ("nat", CAPTURE_CHAIN, capture),
            ("filter", EGRESS_CHAIN, egress),
        ]
    }

    /// The input of `iptables-restore --noflush` (or `ip6tables-restore`)
    /// for `family`: declaring each chain empties it, so the chains are
    /// refilled, each table in one commit, and nothing else is touched.
    /// The `OUTPUT` jumps into them are added apart, once.
    pub fn iptables_restore(&self, family: Family) -> String {
        let mut out = String::new();
        for (table, chain, rules) in self.iptables_tables(family) {
            let _ = writeln!(out, "*{table}\n:{chain} - [0:0]");
            for rule in rules {
                let _ = writeln!(out, "{rule}");
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// Whether `saved` (what `iptables-save` printed for `family`) holds the
/// lock-down `expected` describes: each chain with exactly its rules, and
/// one jump to it from `OUTPUT`.
pub fn iptables_matches(saved: &str, expected: &Lockdown, family: Family) -> bool {
    let mut table = "";
    let mut found: Vec<(String, String)> = Vec::new();
    for line in saved.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            table = name;
        } else if line.starts_with("-A CREDGATE_") || line.starts_with("-A OUTPUT -j CREDGATE_") {
            found.push((table.to_owned(), line.to_owned()));
        }
    }
    let mut wanted: Vec<(String, String)> = Vec::new();
    for (table, chain, rules) in expected.iptables_tables(family) {
        wanted.push((table.to_owned(), format!("-A OUTPUT -j {chain}")));
        wanted.extend(rules.into_iter().map(|r| (table.to_owned(), r)));
    }
    found.sort();
    wanted.sort();
    found == wanted
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
    fn the_iptables_fallback_says_the_same_per_family() {
        let l = lockdown();
        let v4 = l.iptables_restore(Family::V4);
        assert!(v4.starts_with("*nat\n:CREDGATE_CAPTURE - [0:0]\n-A CREDGATE_CAPTURE -m owner --uid-owner 2000 -j RETURN\n"), "{v4}");
        assert!(v4.contains("-A CREDGATE_CAPTURE -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"));
        assert!(v4.contains("-d 10.96.0.10/32 -p udp -m udp --dport 53 -j ACCEPT"));
        assert!(
            !v4.contains("fd00::a"),
            "an IPv6 resolver in the IPv4 rules"
        );
        assert!(v4
            .trim_end()
            .ends_with("-j REJECT --reject-with icmp-admin-prohibited\nCOMMIT"));
        let v6 = l.iptables_restore(Family::V6);
        assert!(v6.contains("-d fd00::a/128 -p tcp -m tcp --dport 53 -j RETURN"));
        assert!(!v6.contains("10.96.0.10"));
        assert!(v6.contains("--reject-with icmp6-adm-prohibited"));
        // The admin port is refused before loopback is opened.
        assert!(v4.find("--dport 8081").unwrap() < v4.find("-o lo -j ACCEPT").unwrap());
    }

    #[test]
    fn a_saved_ruleset_matches_only_with_its_rules_and_one_jump_each() {
        let l = lockdown();
        let saved = |extra: &str| {
            let restore = l.iptables_restore(Family::V4);
            let mut out = String::from("# Generated by iptables-save\n");
            for block in restore.split("COMMIT\n").filter(|b| !b.is_empty()) {
                let (head, rules) = block.split_once('\n').unwrap();
                let chain = if head == "*nat" {
                    CAPTURE_CHAIN
                } else {
                    EGRESS_CHAIN
                };
                out.push_str(&format!(
                    "{head}\n:OUTPUT ACCEPT [0:0]\n{rules}-A OUTPUT -j {chain}\n{extra}COMMIT\n"
                ));
            }
            out
        };
        assert!(iptables_matches(&saved(""), &l, Family::V4));
        assert!(!iptables_matches(
            &saved("-A OUTPUT -j CREDGATE_EGRESS\n"),
            &l,
            Family::V4
        ));
        assert!(!iptables_matches(
            &saved("-A CREDGATE_EGRESS -j ACCEPT\n"),
            &l,
            Family::V4
        ));
        assert!(!iptables_matches(
            &saved(""),
            &Lockdown {
                admin_port: 9,
                ..l.clone()
            },
            Family::V4
        ));
        assert!(!iptables_matches("", &l, Family::V4));
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
