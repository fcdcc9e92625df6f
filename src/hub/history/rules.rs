//! Which channels keep history: rules by exact name, or by a prefix ending in `*`; the
//! exact name wins, then the longest prefix. A rule may say "no history", to leave some
//! channels out of a pattern.

use std::collections::HashMap;

use super::History;

/// The hub's history rules. Empty (the default) costs a send one branch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    exact: HashMap<String, Option<History>>,
    /// By prefix, longest first.
    prefixes: Vec<(String, Option<History>)>,
}

impl Rules {
    /// Adds the rule for `pattern` (a name, or a prefix ending in `*`), replacing one for
    /// the same pattern.
    pub(crate) fn insert(&mut self, pattern: &str, history: Option<History>) {
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                self.prefixes.retain(|(p, _)| p != prefix);
                self.prefixes.push((prefix.to_owned(), history));
                self.prefixes
                    .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            }
            None => {
                self.exact.insert(pattern.to_owned(), history);
            }
        }
    }

    /// The history `channel` keeps, if any.
    pub(crate) fn find(&self, channel: &str) -> Option<&History> {
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return None;
        }
        match self.exact.get(channel) {
            Some(rule) => rule.as_ref(),
            None => self
                .prefixes
                .iter()
                .find(|(prefix, _)| channel.starts_with(prefix.as_str()))
                .and_then(|(_, rule)| rule.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_exact_name_wins_then_the_longest_prefix() {
        let short = History::new(10, Duration::from_secs(1));
        let long = History::new(20, Duration::from_secs(1));
        let mut rules = Rules::default();
        assert_eq!(rules.find("lobby"), None);
        rules.insert("*", Some(short));
        rules.insert("room-*", Some(long));
        rules.insert("room-scratch", None);
        rules.insert("room-x*", None);
        assert_eq!(rules.find("lobby"), Some(&short));
        assert_eq!(rules.find("room-1"), Some(&long));
        assert_eq!(rules.find("room-scratch"), None, "left out by name");
        assert_eq!(rules.find("room-xyz"), None, "left out by a longer prefix");
        rules.insert("room-*", Some(short));
        assert_eq!(rules.find("room-1"), Some(&short), "replaced");
    }
}
