//! Holds `docs/wire-format.md` to the types: postcard writes struct fields in
//! declaration order and enum variants by their position, with no names on the
//! wire, so a table that lists them in another order makes a third-party
//! decoder read the wrong bytes without noticing.
//!
//! The order is taken from serde itself: a small [`Serializer`] records the
//! field names each `Serialize` impl hands it (`serialize_struct` then
//! `serialize_field`, in the order postcard would write them) and the index
//! and name of every enum variant it meets, walking fully populated values
//! (every `Option` `Some`, every sequence non-empty), so nested structs are
//! reached too.

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::{self, Serialize, Serializer};

use crate::fixtures::{full_end, full_failure, full_header, full_record};
use crate::*;

/// Field names per struct (struct variants as `Enum::Variant`) and
/// variants per enum (discriminant → serde name), as serde reported them.
#[derive(Default)]
struct Layouts {
    structs: BTreeMap<String, Vec<&'static str>>,
    enums: BTreeMap<&'static str, BTreeMap<u32, &'static str>>,
}

impl Layouts {
    fn walk<T: Serialize>(&mut self, value: &T) {
        value.serialize(&mut *self).unwrap();
    }

    fn variant(&mut self, name: &'static str, index: u32, variant: &'static str) {
        let seen = self.enums.entry(name).or_default().insert(index, variant);
        assert!(seen.is_none_or(|v| v == variant), "{name}: variant {index} is {variant} and {seen:?}");
    }
}

#[derive(Debug)]
struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// Serialises one struct (or struct variant) and records its field names on
/// `end`; sequences, tuples and maps only pass their items on.
struct Compound<'a> {
    layouts: &'a mut Layouts,
    name: Option<String>,
    fields: Vec<&'static str>,
}

impl Compound<'_> {
    /// A struct's field, in the order serde visits it (= declaration order).
    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.fields.push(key);
        value.serialize(&mut *self.layouts)
    }

    fn end(self) -> Result<(), Error> {
        if let Some(name) = self.name {
            let old = self.layouts.structs.insert(name.clone(), self.fields.clone());
            assert!(old.is_none_or(|f| f == self.fields), "{name} serialised its fields in two orders");
        }
        Ok(())
    }
}

impl<'a> Serializer for &'a mut Layouts {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, _: bool) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, name: &'static str, index: u32, variant: &'static str) -> Result<(), Error> {
        self.variant(name, index, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant(name, index, variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Error> {
        Ok(Compound { layouts: self, name: None, fields: Vec::new() })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound { layouts: self, name: None, fields: Vec::new() })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound { layouts: self, name: None, fields: Vec::new() })
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Error> {
        self.variant(name, index, variant);
        Ok(Compound { layouts: self, name: None, fields: Vec::new() })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Error> {
        Ok(Compound { layouts: self, name: None, fields: Vec::new() })
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Compound<'a>, Error> {
        Ok(Compound { layouts: self, name: Some(name.to_string()), fields: Vec::new() })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Error> {
        self.variant(name, index, variant);
        Ok(Compound { layouts: self, name: Some(format!("{name}::{variant}")), fields: Vec::new() })
    }
}

/// Sequences and tuples (named or not) have no field names to record: their
/// elements are walked for the structs inside them.
macro_rules! walk_elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                value.serialize(&mut *self.layouts)
            }
            fn end(self) -> Result<(), Error> {
                Compound::end(self)
            }
        }
    )*};
}

walk_elements!(SerializeSeq::serialize_element, SerializeTuple::serialize_element, SerializeTupleStruct::serialize_field, SerializeTupleVariant::serialize_field);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(&mut *self.layouts)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.layouts)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.field(key, value)
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), Error> {
        // postcard never skips, and no wire type asks to; a skipped field
        // would still be a column of the table.
        self.fields.push(key);
        Ok(())
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        Compound::end(self)
    }
}

/// Every message, fully populated, and every variant of every enum that
/// travels in one; the layouts serde reports for them.
fn wire_layouts() -> Layouts {
    let mut l = Layouts::default();
    l.walk(&Message::Hello { token: "t".into() });
    l.walk(&Message::Header(full_header()));
    l.walk(&Message::Record(full_record()));
    l.walk(&Message::Failure(full_failure()));
    l.walk(&Message::End(full_end()));
    for p in [Precision::Fp32, Precision::Int8] {
        l.walk(&p);
    }
    for b in [Backend::TractCpu, Backend::TractCuda, Backend::TractPlain] {
        l.walk(&b);
    }
    for i in [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest] {
        l.walk(&i);
    }
    for m in [Mapping::Identity, Mapping::ImageNet] {
        l.walk(&m);
    }
    for m in [CorruptionMode::ImagenetC, CorruptionMode::Direct, CorruptionMode::Files] {
        l.walk(&m);
    }
    for o in [Outputs::Logits, Outputs::SoftmaxInGraph, Outputs::RowsSumToOne] {
        l.walk(&o);
    }
    for a in [Attack::Fgsm, Attack::Pgd] {
        l.walk(&ProbeSet::Adversarial(a));
    }
    for o in [OodSet::Edge, OodSet::Silhouette, OodSet::Sketch, OodSet::Stylized, OodSet::Rendition] {
        l.walk(&ProbeSet::Ood(o));
    }
    for p in [ProbeSet::Clean, ProbeSet::Corruption { corruption: 0, severity: 1 }, ProbeSet::CueConflict, ProbeSet::MixedSame, ProbeSet::MixedRand] {
        l.walk(&p);
    }
    for g in [ProbeGroup::Clean, ProbeGroup::Ood, ProbeGroup::CueConflict, ProbeGroup::Background, ProbeGroup::Corruption, ProbeGroup::Adversarial] {
        l.walk(&g);
    }
    l
}

/// Whether postcard decodes discriminant `index` (followed by zeros, enough
/// for any payload) as a `T`.
fn decodes<T: serde::de::DeserializeOwned>(index: u32) -> bool {
    let mut bytes = [0u8; 64];
    postcard::to_slice(&index, &mut bytes).unwrap();
    postcard::from_bytes::<T>(&bytes).is_ok()
}

/// The tables of the document's "Messages" section: for each `###` heading,
/// the first backquoted name in it and the cells of its first table's body
/// rows, backquotes removed.
fn doc_tables(doc: &str) -> Vec<(String, Vec<Vec<String>>)> {
    let section = doc.split_once("\n## Messages\n").expect("docs/wire-format.md has a \"## Messages\" section").1;
    let section = section.split("\n## ").next().unwrap();
    let mut tables: Vec<(String, Vec<Vec<String>>)> = Vec::new();
    // Table lines seen under the current heading, and whether its (first)
    // table has ended: later tables under the same heading do not count.
    let (mut rows_seen, mut ended) = (0, false);
    for line in section.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.split('`').nth(1).unwrap_or_else(|| panic!("heading {heading:?} names no `type`"));
            tables.push((name.to_string(), Vec::new()));
            (rows_seen, ended) = (0, false);
        } else if line.trim_start().starts_with('|') {
            let Some((name, rows)) = tables.last_mut() else { continue };
            rows_seen += 1;
            // Row 1 is the column titles, row 2 the `|---|` rule.
            if ended || rows_seen <= 2 {
                continue;
            }
            let cells: Vec<String> = line.trim().trim_matches('|').split('|').map(|c| c.trim().replace('`', "")).collect();
            assert!(!cells[0].is_empty(), "{name}: a row with an empty first column: {line}");
            rows.push(cells);
        } else if rows_seen > 0 {
            ended = true;
        }
    }
    tables
}

#[test]
fn wire_format_doc_lists_fields_and_variants_in_wire_order() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/wire-format.md")).unwrap();
    let layouts = wire_layouts();
    let tables = doc_tables(&doc);
    let mut documented = std::collections::BTreeSet::new();
    for (name, rows) in &tables {
        assert!(documented.insert(name.clone()), "docs/wire-format.md has two tables for {name}");
        assert!(!rows.is_empty(), "docs/wire-format.md: the table for {name} has no rows");
        if let Some(fields) = layouts.structs.get(name) {
            let doc_fields: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
            assert_eq!(doc_fields, *fields, "docs/wire-format.md: {name}'s fields, as the table lists them (left) and in declaration order (right)");
        } else if let Some(variants) = layouts.enums.get(name.as_str()) {
            // Columns: discriminant, Rust variant, serde (JSON) name, …
            let doc_variants: Vec<(u32, &str)> = rows
                .iter()
                .map(|r| {
                    let i = r[0].parse().unwrap_or_else(|_| panic!("{name}: {:?} is not a discriminant", r[0]));
                    (i, r.get(2).map_or("", |s| s.as_str()))
                })
                .collect();
            let wire: Vec<(u32, &str)> = variants.iter().map(|(&i, &v)| (i, v)).collect();
            assert_eq!(doc_variants, wire, "docs/wire-format.md: {name}'s variants (discriminant, serde name), as the table lists them (left) and as serde numbers them (right)");
        } else {
            panic!("docs/wire-format.md has a table for {name}, which no message carries");
        }
    }
    for name in layouts.structs.keys().map(String::as_str).chain(layouts.enums.keys().copied()) {
        assert!(documented.contains(name), "docs/wire-format.md has no table for {name}");
    }
}

#[test]
fn every_variant_is_walked() {
    // Discriminants are dense from 0; one past the last walked must not
    // decode, or a variant was added that `wire_layouts` (and so the
    // document's check) does not know about.
    let layouts = wire_layouts();
    let count = |name: &str| {
        let v = &layouts.enums[name];
        assert!(v.keys().copied().eq(0..v.len() as u32), "{name}: walked discriminants {:?} are not 0..n", v.keys());
        v.len() as u32
    };
    assert!(!decodes::<Message>(count("Message")));
    assert!(!decodes::<ProbeSet>(count("ProbeSet")));
    assert!(!decodes::<Attack>(count("Attack")));
    assert!(!decodes::<OodSet>(count("OodSet")));
    assert!(!decodes::<Precision>(count("Precision")));
    assert!(!decodes::<Backend>(count("Backend")));
    assert!(!decodes::<Interpolation>(count("Interpolation")));
    assert!(!decodes::<Mapping>(count("Mapping")));
    assert!(!decodes::<CorruptionMode>(count("CorruptionMode")));
    assert!(!decodes::<Outputs>(count("Outputs")));
    assert!(!decodes::<ProbeGroup>(count("ProbeGroup")));
    // And the last walked one does decode: the probe is sound.
    assert!(decodes::<ProbeGroup>(count("ProbeGroup") - 1));
    assert_eq!(layouts.enums.len(), 11, "an enum on the wire that this test does not probe: {:?}", layouts.enums.keys());
}
