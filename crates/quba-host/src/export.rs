//! Spreadsheet exports of a report (`--csv`, `--xlsx`): one row per model
//! run. Both writers take the same [`Table`], so a column exists in one
//! format exactly when it exists in the other.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use crate::quba::Dimension;
use crate::report::Report;

/// One cell; numbers stay numbers so a spreadsheet can compute with them.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    /// Not measured (or not finite): an empty cell, never a 0 or "NaN".
    Empty,
}

impl Cell {
    fn number(v: Option<f64>) -> Cell {
        v.filter(|x| x.is_finite()).map(Cell::Number).unwrap_or(Cell::Empty)
    }

    fn text(s: &str) -> Cell {
        if s.is_empty() {
            Cell::Empty
        } else {
            Cell::Text(s.to_string())
        }
    }
}

pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Columns: model, precision, int8_format, target, backend, quba, the nine
/// dimensions (results.json keys), their 95% interval as `<key>_lo` /
/// `<key>_hi`, then every part-measure any model has, sorted by name.
pub fn table(rep: &Report) -> Table {
    let parts: BTreeSet<&String> = rep.results.iter().flat_map(|r| r.parts.keys()).collect();
    let mut columns: Vec<String> = ["model", "precision", "int8_format", "target", "backend", "quba"].map(String::from).to_vec();
    columns.extend(Dimension::ALL.iter().map(|d| d.key().to_string()));
    for d in Dimension::ALL {
        columns.push(format!("{}_lo", d.key()));
        columns.push(format!("{}_hi", d.key()));
    }
    columns.extend(parts.iter().map(|p| p.to_string()));
    let rows = rep
        .runs
        .iter()
        .zip(&rep.results)
        .zip(&rep.scored)
        .map(|((run, res), sc)| {
            let h = &run.header;
            let mut row = vec![
                Cell::text(&h.model_name),
                Cell::text(h.precision.as_str()),
                Cell::text(&h.int8_format),
                Cell::text(&h.target),
                Cell::text(h.backend.as_str()),
                Cell::number(sc.quba),
            ];
            row.extend(res.values.iter().map(|v| Cell::number(*v)));
            for iv in &res.intervals {
                row.push(Cell::number(iv.map(|x| x.0)));
                row.push(Cell::number(iv.map(|x| x.1)));
            }
            row.extend(parts.iter().map(|p| Cell::number(res.parts.get(*p).copied())));
            row
        })
        .collect();
    Table { columns, rows }
}

pub fn write_csv(t: &Table, path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("cannot create {}", path.display()))?;
    w.write_record(&t.columns).with_context(|| format!("cannot write {}", path.display()))?;
    for row in &t.rows {
        // `{}` of an f64 is the shortest text that parses back to the same number.
        let fields = row.iter().map(|c| match c {
            Cell::Text(s) => s.clone(),
            Cell::Number(x) => format!("{x}"),
            Cell::Empty => String::new(),
        });
        w.write_record(fields).with_context(|| format!("cannot write {}", path.display()))?;
    }
    w.flush().with_context(|| format!("cannot write {}", path.display()))
}

pub fn write_xlsx(t: &Table, path: &Path) -> Result<()> {
    use rust_xlsxwriter::{Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| anyhow::anyhow!("{}: {e}", path.display());
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("results").map_err(fail)?;
    let bold = Format::new().set_bold();
    for (c, name) in t.columns.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, name, &bold).map_err(fail)?;
    }
    for (r, row) in t.rows.iter().enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Text(s) => {
                    sheet.write_string(r, c, s).map_err(fail)?;
                }
                Cell::Number(x) => {
                    sheet.write_number(r, c, *x).map_err(fail)?;
                }
                Cell::Empty => {}
            }
        }
    }
    sheet.set_freeze_panes(1, 1).map_err(fail)?;
    book.save(path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_non_finite_cells_are_empty_not_zero() {
        assert_eq!(Cell::number(None), Cell::Empty);
        assert_eq!(Cell::number(Some(f64::NAN)), Cell::Empty);
        assert_eq!(Cell::number(Some(0.25)), Cell::Number(0.25));
        assert_eq!(Cell::text(""), Cell::Empty);
    }
}
