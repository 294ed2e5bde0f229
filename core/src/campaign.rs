//! Campaigns: the JSON file, and the flat table that lives in nginx shared memory.
//!
//! The file is a JSON array of objects `{"id", "status", "landing_url", ...}`; unknown fields are
//! kept for later use (budget fields) and ignored here. The table is an immutable byte image
//! built by [`build_table`] and read in place by [`TableView`]: open addressing over u32
//! offsets, so lookups are O(1) and position-independent (any mapping address works).

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status { Active, Paused, Ended }

#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub status: Status,
    pub landing_url: String,
}

/// A campaigns file error: 1-based line of the offending object (or of the JSON syntax error),
/// and the reason, e.g. `line 7: campaign "c1": landing_url: scheme must be http or https`.
#[derive(Debug, PartialEq)]
pub struct FileError { pub line: usize, pub message: String }

/// Parses and validates a campaigns file: JSON syntax, required fields, id charset
/// (`input::valid_campaign_id`), status, landing URL (`landing::Template::parse`), duplicate ids.
pub fn parse_file(text: &str) -> Result<Vec<Campaign>, FileError> { unimplemented!() }

/// The number of bytes [`build_table`] needs for these campaigns.
pub fn table_size(campaigns: &[Campaign]) -> usize { unimplemented!() }

/// Builds the table image into `out` (cleared first). `out.len() == table_size(campaigns)` after.
pub fn build_table(campaigns: &[Campaign], out: &mut Vec<u8>) { unimplemented!() }

/// A campaign found in a table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CampaignRef<'a> { pub status: Status, pub landing_url: &'a [u8] }

/// Reads a table image in place. All offsets are bounds-checked: a corrupt or torn image gives
/// wrong answers or None, never a panic (the module re-checks a sequence number around lookups).
#[derive(Clone, Copy)]
pub struct TableView<'a> { /* implementation-defined */ _b: &'a [u8] }

impl<'a> TableView<'a> {
    /// None when the image is not a table (bad magic or sizes).
    pub fn new(image: &'a [u8]) -> Option<TableView<'a>> { unimplemented!() }
    pub fn len(&self) -> usize { unimplemented!() }
    pub fn get(&self, id: &[u8]) -> Option<CampaignRef<'a>> { unimplemented!() }
}
