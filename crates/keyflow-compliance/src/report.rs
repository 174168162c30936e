//! The report: controls with their status and evidence, the inventory, the mapping of the
//! old report's labels.

use serde::Serialize;
use serde_json::{Map, Value};

/// A control's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The control could not be evaluated here, or does not apply (the evidence says why).
    NotApplicable,
    /// Evaluated and met.
    Pass,
    /// Met only in part, or not measurable: look at it.
    Warn,
    /// Not met.
    Fail,
}

impl Status {
    /// `pass`, `warn`, `fail` or `not_applicable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotApplicable => "not_applicable",
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One evaluated control.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Control {
    /// The requirement's number in its standard (`3.7.4`, `Art. 32(1)(c)`, `A.8.24`).
    pub id: String,
    /// What it asks, briefly.
    pub title: String,
    /// The outcome.
    pub status: Status,
    /// The measured facts, one sentence each.
    pub evidence: Vec<String>,
    /// The same facts as numbers, where useful.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub measurements: Map<String, Value>,
    /// What to do, when not passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

/// Builds a [`Control`]. It starts *not evaluated*: unless a check calls
/// [`Self::pass`], [`Self::warn`], [`Self::fail`] or [`Self::not_applicable`], the
/// control ends as `warn` saying it was not evaluated — never `pass` by default.
pub(crate) struct ControlBuilder {
    id: &'static str,
    title: &'static str,
    status: Option<Status>,
    evidence: Vec<String>,
    measurements: Map<String, Value>,
    remediation: Vec<String>,
}

impl ControlBuilder {
    pub(crate) fn new(id: &'static str, title: &'static str) -> Self {
        Self {
            id,
            title,
            status: None,
            evidence: Vec::new(),
            measurements: Map::new(),
            remediation: Vec::new(),
        }
    }

    /// A measured fact.
    pub(crate) fn fact(&mut self, text: impl Into<String>) -> &mut Self {
        self.evidence.push(text.into());
        self
    }

    /// A number (or any value) for machines.
    pub(crate) fn measure(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.measurements.insert(name.to_owned(), value.into());
        self
    }

    fn raise(&mut self, to: Status) {
        self.status = Some(self.status.map_or(to, |s| s.max(to)));
    }

    /// Every check made found the control met.
    pub(crate) fn pass(&mut self) -> &mut Self {
        self.raise(Status::Pass);
        self
    }

    /// A finding that needs attention, and what to do about it.
    pub(crate) fn warn(&mut self, why: impl Into<String>, fix: impl Into<String>) -> &mut Self {
        self.evidence.push(why.into());
        self.add_fix(fix.into());
        self.raise(Status::Warn);
        self
    }

    /// A finding that fails the control, and what to do about it.
    pub(crate) fn fail(&mut self, why: impl Into<String>, fix: impl Into<String>) -> &mut Self {
        self.evidence.push(why.into());
        self.add_fix(fix.into());
        self.raise(Status::Fail);
        self
    }

    /// Nothing to evaluate, and why (only when nothing else was found).
    pub(crate) fn not_applicable(&mut self, why: impl Into<String>) -> &mut Self {
        self.evidence.push(why.into());
        if self.status.is_none() {
            self.status = Some(Status::NotApplicable);
        }
        self
    }

    fn add_fix(&mut self, fix: String) {
        if !fix.is_empty() && !self.remediation.contains(&fix) {
            self.remediation.push(fix);
        }
    }

    pub(crate) fn build(mut self) -> Control {
        let status = match self.status {
            Some(s) => s,
            None => {
                self.evidence
                    .push("not evaluated: no check applied to the facts available".into());
                Status::Warn
            }
        };
        let remediation = (status != Status::Pass && status != Status::NotApplicable)
            .then(|| self.remediation.join(" "))
            .filter(|r| !r.is_empty())
            .or_else(|| {
                (status == Status::Warn || status == Status::Fail)
                    .then(|| "Review the evidence above.".to_owned())
            });
        Control {
            id: self.id.to_owned(),
            title: self.title.to_owned(),
            status,
            evidence: self.evidence,
            measurements: self.measurements,
            remediation,
        }
    }
}

/// The four standards, under the old report's names.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Standards {
    /// PCI DSS v4.0.1.
    pub pci_dss: Vec<Control>,
    /// GDPR (Regulation (EU) 2016/679).
    pub gdpr: Vec<Control>,
    /// NIST SP 800-57 Part 1 Rev. 5.
    pub nist: Vec<Control>,
    /// ISO/IEC 27001:2022 Annex A.
    pub iso27001: Vec<Control>,
}

impl Standards {
    /// Every control with its standard's key.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Control)> {
        self.pci_dss
            .iter()
            .map(|c| ("pciDss", c))
            .chain(self.gdpr.iter().map(|c| ("gdpr", c)))
            .chain(self.nist.iter().map(|c| ("nist", c)))
            .chain(self.iso27001.iter().map(|c| ("iso27001", c)))
    }

    /// Each standard's controls under the title the rendered reports give it.
    pub fn titled(&self) -> [(&'static str, &[Control]); 4] {
        [
            ("PCI DSS v4.0.1", &self.pci_dss),
            ("GDPR", &self.gdpr),
            ("NIST SP 800-57 Part 1", &self.nist),
            ("ISO/IEC 27001:2022", &self.iso27001),
        ]
    }
}

/// How many controls have each status.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// All controls.
    pub total: usize,
    /// Passing.
    pub pass: usize,
    /// Warning.
    pub warn: usize,
    /// Failing.
    pub fail: usize,
    /// Not applicable or not evaluable here.
    pub not_applicable: usize,
}

/// One line of the cryptographic inventory (PCI DSS 3.6.1.1).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = InventoryEntry))]
pub struct InventoryItem {
    /// `purpose:vN`.
    pub key_id: String,
    /// Key ring.
    pub purpose: String,
    /// Version.
    pub version: u32,
    /// Algorithm.
    pub algorithm: String,
    /// Lifecycle state.
    pub status: String,
    /// Created (RFC 3339).
    pub created: String,
    /// Age at the evaluation instant, whole days.
    pub age_days: i64,
    /// The policy's cryptoperiod, days.
    pub cryptoperiod_days: u32,
    /// The policy's warning window: rotation happens this many days before the end.
    pub warn_days: u32,
    /// Encryptions made.
    pub encryptions: u64,
    /// The policy's encryption budget.
    pub budget: u64,
    /// The wrapping KEK.
    pub kek_id: String,
    /// Imported from the legacy system.
    pub legacy: bool,
}

/// The inventory table's columns as the rendered reports show them: the header, and
/// whether the column holds a number (right-aligned).
pub const INVENTORY_COLUMNS: [(&str, bool); 8] = [
    ("Key", false),
    ("Status", false),
    ("Algorithm", false),
    ("Created", false),
    ("Age (d)", true),
    ("Cryptoperiod (d)", true),
    ("Encryptions", true),
    ("KEK", false),
];

impl InventoryItem {
    /// The row's cells under [`INVENTORY_COLUMNS`], as text (each renderer escapes).
    pub fn cells(&self) -> [String; 8] {
        let legacy = if self.legacy { " (legacy)" } else { "" };
        [
            format!("{}{legacy}", self.key_id),
            self.status.clone(),
            self.algorithm.clone(),
            self.created.clone(),
            self.age_days.to_string(),
            self.cryptoperiod_days.to_string(),
            self.encryptions.to_string(),
            self.kek_id.clone(),
        ]
    }
}

/// An old report label and the controls that now answer it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyLabel {
    /// `PCI DSS 3.2.1` or `ISO/IEC 27001:2013`.
    pub standard: &'static str,
    /// The old requirement (`3.4`, `A.10.1`).
    pub requirement: &'static str,
    /// What it asked.
    pub title: &'static str,
    /// `standard/id` of the controls that answer it (`pciDss/3.4.1`).
    pub controls: Vec<&'static str>,
    /// The worst status among them.
    pub status: Status,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// When the report was made (RFC 3339).
    pub generated_at: String,
    /// The instant the time-dependent controls were evaluated at.
    pub evaluated_at: String,
    /// `fail` if any control fails, else `warn` if any warns (or none passed), else `pass`.
    pub overall: Status,
    /// Counts per status.
    pub summary: Summary,
    /// The controls, per standard.
    pub standards: Standards,
    /// How KeyFlow implements the cryptography (facts of this deployment).
    pub implementation: Value,
    /// Every key version.
    pub inventory: Vec<InventoryItem>,
    /// The old report's labels mapped to the controls above.
    pub legacy_mapping: Vec<LegacyLabel>,
}
