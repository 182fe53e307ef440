//! The requirement rows, embedded verbatim from the framework excerpt
//! (`provisioner/assets/iotsf-af-3.0-rows.tsv`, CC BY 4.0, © IoT Security
//! Foundation), and the "Mandatory for Class N and above" rule.

use serde::Serialize;

/// The embedded rows: section, Req No, requirement, applicability, primary
/// and secondary keyword, tab-separated; `#` lines are comments.
const ROWS: &str = include_str!("../../assets/iotsf-af-3.0-rows.tsv");

/// Attribution that must accompany any output quoting the rows.
pub const ATTRIBUTION: &str = "Requirement texts: IoT Security Foundation, IoT Security Assurance \
Framework Release 3.0 (Nov 2021), CC BY 4.0, (c) 2016-2024 IoT Security Foundation.";

/// How a requirement applies at an assurance class (section 2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Applicability {
    /// Must be met.
    Mandatory,
    /// Recommended.
    Advisory,
    /// Does not apply at this class.
    NotApplicable,
}

impl Applicability {
    /// Lowercase words for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Applicability::Mandatory => "mandatory",
            Applicability::Advisory => "advisory",
            Applicability::NotApplicable => "not applicable",
        }
    }
}

/// The framework's applicability column, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// "Mandatory for all classes".
    MandatoryAll,
    /// "Mandatory for Class N and above".
    MandatoryFrom(u8),
    /// "Advisory for all classes".
    AdvisoryAll,
}

impl Rule {
    /// Parses the column.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("Mandatory for all classes") {
            return Some(Rule::MandatoryAll);
        }
        if t.eq_ignore_ascii_case("Advisory for all classes") {
            return Some(Rule::AdvisoryAll);
        }
        let n = t
            .strip_prefix("Mandatory for Class ")?
            .strip_suffix(" and above")?
            .parse()
            .ok()?;
        (n <= 4).then_some(Rule::MandatoryFrom(n))
    }

    /// The applicability at `class` (0 to 4): classes N..4 for
    /// "Class N and above".
    pub fn at(self, class: u8) -> Applicability {
        match self {
            Rule::MandatoryAll => Applicability::Mandatory,
            Rule::AdvisoryAll => Applicability::Advisory,
            Rule::MandatoryFrom(n) if class >= n => Applicability::Mandatory,
            Rule::MandatoryFrom(_) => Applicability::NotApplicable,
        }
    }
}

/// One requirement row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The section heading it is listed under.
    pub section: &'static str,
    /// "2.4.14.22".
    pub number: &'static str,
    /// The requirement text, verbatim.
    pub text: &'static str,
    /// The applicability column, verbatim.
    pub applicability_text: &'static str,
    /// Parsed.
    pub rule: Rule,
    /// "Business" or "System".
    pub primary: &'static str,
    /// "Process", "Policy", "Software", "Hardware".
    pub secondary: &'static str,
}

/// Every embedded row, in framework order.
pub fn all() -> Vec<Requirement> {
    ROWS.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let mut f = line.split('\t');
            let section = f.next()?;
            let number = f.next()?;
            let text = f.next()?;
            let applicability_text = f.next()?;
            let primary = f.next()?;
            let secondary = f.next()?;
            Some(Requirement {
                section,
                number,
                text,
                applicability_text,
                rule: Rule::parse(applicability_text)?,
                primary,
                secondary,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_parses_with_its_rule() {
        let rows = all();
        let lines = ROWS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert_eq!(rows.len(), lines, "a row failed to parse");
        assert_eq!(rows.len(), 49);
        assert!(rows.iter().any(|r| r.number == "2.4.14.22"));
        assert!(rows.iter().any(|r| r.number == "2.4.16.7"));
        assert!(rows.iter().any(|r| r.number == "2.4.8.18"));
    }

    #[test]
    fn class_rule_follows_section_2_4_2() {
        let from2 = Rule::parse("Mandatory for Class 2 and above").expect("parses");
        assert_eq!(from2.at(1), Applicability::NotApplicable);
        assert_eq!(from2.at(2), Applicability::Mandatory);
        assert_eq!(from2.at(4), Applicability::Mandatory);
        assert_eq!(Rule::MandatoryAll.at(0), Applicability::Mandatory);
        assert_eq!(Rule::AdvisoryAll.at(3), Applicability::Advisory);
        assert_eq!(Rule::parse("Mandatory for Class 9 and above"), None);
    }
}
