//! The helper payload types of PROTOCOL.md §9, with exactly the msgpack forms of their
//! Go counterparts (`grid.NoPayload`, `grid.Bytes`, `grid.MSS`, `grid.URLValues`,
//! `grid.JSON[T]`).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CodecError, Message};

/// No payload at all: encodes to **zero bytes** (for a stream item, an empty item, sent
/// with the protocol's zero flag) and decodes from anything, ignoring it.
///
/// It is the input type of [`StreamHandler::no_input`](super::StreamHandler::no_input)
/// streams and the payload type of
/// [`StreamHandler::no_payload`](super::StreamHandler::no_payload) ones. Not a serde
/// type: as a struct field, use `()` or an `Option`.
///
/// ```
/// use grid_core::typed::{Message, NoPayload};
///
/// assert!(NoPayload.encode().unwrap().is_empty());
/// assert_eq!(NoPayload::decode(&[0xc0]).unwrap(), NoPayload);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NoPayload;

impl Message for NoPayload {
    fn encode(&self) -> Result<Bytes, CodecError> {
        Ok(Bytes::new())
    }

    fn decode(_payload: &[u8]) -> Result<Self, CodecError> {
        Ok(NoPayload)
    }
}

/// Raw bytes: a msgpack **bin**, or **nil** (`0xc0`) for `None` (Go's nil slice). The
/// default is nil.
///
/// ```
/// use grid_core::typed::{BytesPayload, Message};
///
/// assert_eq!(&BytesPayload::from(&b"hi"[..]).encode().unwrap()[..], &[0xc4, 2, b'h', b'i']);
/// assert_eq!(&BytesPayload::nil().encode().unwrap()[..], &[0xc0]);
/// assert_eq!(BytesPayload::decode(&[0xc0]).unwrap(), BytesPayload::nil());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BytesPayload(pub Option<Bytes>);

impl BytesPayload {
    /// Nil (no bytes at all, as opposed to empty bytes).
    pub const fn nil() -> BytesPayload {
        BytesPayload(None)
    }

    /// These bytes.
    pub fn new(bytes: impl Into<Bytes>) -> BytesPayload {
        BytesPayload(Some(bytes.into()))
    }

    /// Whether it is nil.
    pub fn is_nil(&self) -> bool {
        self.0.is_none()
    }

    /// The bytes; empty for nil.
    pub fn as_slice(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl From<Bytes> for BytesPayload {
    fn from(b: Bytes) -> Self {
        BytesPayload(Some(b))
    }
}

impl From<Vec<u8>> for BytesPayload {
    fn from(b: Vec<u8>) -> Self {
        BytesPayload(Some(b.into()))
    }
}

impl From<&[u8]> for BytesPayload {
    fn from(b: &[u8]) -> Self {
        BytesPayload(Some(Bytes::copy_from_slice(b)))
    }
}

impl From<Option<Bytes>> for BytesPayload {
    fn from(b: Option<Bytes>) -> Self {
        BytesPayload(b)
    }
}

impl Serialize for BytesPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }
}

impl<'de> Deserialize<'de> for BytesPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BytesPayload(
            Option::<Bin>::deserialize(d)?.map(|b| Bytes::from(b.0)),
        ))
    }
}

/// A msgpack bin (a str is accepted too when decoding).
struct Bin(Vec<u8>);

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BinVisitor;

        impl Visitor<'_> for BinVisitor {
            type Value = Bin;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bin")
            }

            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }

            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bin, E> {
                Ok(Bin(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bin, E> {
                Ok(Bin(v.as_bytes().to_vec()))
            }
        }

        d.deserialize_byte_buf(BinVisitor)
    }
}

/// A map of strings to strings (Go's `MSS`): a msgpack **map** of str → str, or **nil**
/// (`0xc0`) for `None` (Go's nil map). The default is nil; [`Mss::new`] is empty, not
/// nil. Keys are kept sorted, so the encoding is deterministic.
///
/// ```
/// use grid_core::typed::{Message, Mss};
///
/// let m = Mss::from_iter([("k", "v")]);
/// assert_eq!(&m.encode().unwrap()[..], &[0x81, 0xa1, b'k', 0xa1, b'v']);
/// assert_eq!(&Mss::default().encode().unwrap()[..], &[0xc0]);
/// assert_eq!(&Mss::new().encode().unwrap()[..], &[0x80]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mss(pub Option<BTreeMap<String, String>>);

impl Mss {
    /// An empty (not nil) map.
    pub fn new() -> Mss {
        Mss(Some(BTreeMap::new()))
    }

    /// Whether it is nil.
    pub fn is_nil(&self) -> bool {
        self.0.is_none()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.as_ref()?.get(key).map(String::as_str)
    }

    /// Sets `key` (making a nil map empty first); returns the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into())
    }

    /// The number of entries (0 for nil).
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, BTreeMap::len)
    }

    /// Whether it has no entries (nil or empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<BTreeMap<String, String>> for Mss {
    fn from(m: BTreeMap<String, String>) -> Self {
        Mss(Some(m))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Mss {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Mss(Some(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        ))
    }
}

/// URL query values (Go's `URLValues`, a `url.Values`): a msgpack **map** of str →
/// **array** of str. There is no nil: an empty map (Go's nil one too) encodes as `0x80`;
/// a nil (`0xc0`) map or value is accepted when decoding, as empty. Keys are kept
/// sorted, so the encoding is deterministic.
///
/// ```
/// use grid_core::typed::{Message, UrlValues};
///
/// let mut v = UrlValues::new();
/// v.add("k", "a");
/// v.add("k", "b");
/// assert_eq!(&v.encode().unwrap()[..], &[0x81, 0xa1, b'k', 0x92, 0xa1, b'a', 0xa1, b'b']);
/// assert_eq!(&UrlValues::new().encode().unwrap()[..], &[0x80]);
/// assert_eq!(UrlValues::decode(&[0xc0]).unwrap(), UrlValues::new());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UrlValues(pub BTreeMap<String, Vec<String>>);

impl UrlValues {
    /// No values.
    pub fn new() -> UrlValues {
        UrlValues::default()
    }

    /// Appends `value` to `key`'s values.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.entry(key.into()).or_default().push(value.into());
    }

    /// Replaces `key`'s values with `value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), vec![value.into()]);
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.first().map(String::as_str)
    }

    /// Every value of `key`.
    pub fn get_all(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

impl From<BTreeMap<String, Vec<String>>> for UrlValues {
    fn from(m: BTreeMap<String, Vec<String>>) -> Self {
        UrlValues(m)
    }
}

impl<'de> Deserialize<'de> for UrlValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Option::<BTreeMap<String, Option<Vec<String>>>>::deserialize(d)?;
        Ok(UrlValues(
            m.into_iter()
                .flatten()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect(),
        ))
    }
}

/// A value carried as JSON (Go's `JSON[T]`): a msgpack **bin** holding the JSON text
/// **with a trailing newline** (as Go's `json.Encoder` writes it, including its escaping
/// of `<`, `>`, `&`, U+2028 and U+2029), or **nil** (`0xc0`) for `None`. The default is
/// nil.
///
/// ```
/// use grid_core::typed::{Json, Message};
///
/// let j = Json::new(vec![1, 2]);
/// assert_eq!(&j.encode().unwrap()[..], b"\xc4\x06[1,2]\n");
/// assert_eq!(Json::<Vec<u8>>::decode(b"\xc4\x06[1,2]\n").unwrap(), j);
/// assert_eq!(&Json::<u8>::nil().encode().unwrap()[..], &[0xc0]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Json<T>(pub Option<T>);

impl<T> Json<T> {
    /// This value.
    pub fn new(value: T) -> Json<T> {
        Json(Some(value))
    }

    /// Nil.
    pub const fn nil() -> Json<T> {
        Json(None)
    }

    /// The value, `None` for nil.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }

    /// The value, `None` for nil.
    pub fn into_inner(self) -> Option<T> {
        self.0
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json(None)
    }
}

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(v) => {
                let text = go_json(v).map_err(serde::ser::Error::custom)?;
                s.serialize_bytes(&text)
            }
            None => s.serialize_none(),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<Bin>::deserialize(d)? {
            Some(text) => serde_json::from_slice(&text.0)
                .map(|v| Json(Some(v)))
                .map_err(de::Error::custom),
            None => Ok(Json(None)),
        }
    }
}

/// `v` as Go's `json.NewEncoder(w).Encode(v)` writes it (HTML escaping on, trailing
/// newline). The escaped characters only occur inside JSON strings, so escaping them in
/// serde_json's output is exact.
fn go_json<T: Serialize>(v: &T) -> serde_json::Result<Vec<u8>> {
    let text = serde_json::to_vec(v)?;
    let mut out = Vec::with_capacity(text.len() + 1);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            // U+2028 and U+2029: E2 80 A8 / E2 80 A9.
            0xe2 if text.get(i + 1) == Some(&0x80)
                && matches!(text.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                out.extend_from_slice(if text[i + 2] == 0xa8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::Tuple;
    use super::*;

    fn enc<T: Message>(v: &T) -> Vec<u8> {
        v.encode().expect("encodes").to_vec()
    }

    fn dec<T: Message>(b: &[u8]) -> T {
        T::decode(b).expect("decodes")
    }

    #[test]
    fn no_payload_is_zero_bytes() {
        assert_eq!(enc(&NoPayload), Vec::<u8>::new());
        assert_eq!(dec::<NoPayload>(&[]), NoPayload);
        // Anything decodes, as Go's UnmarshalMsg ignores its input.
        assert_eq!(dec::<NoPayload>(&[0xc0]), NoPayload);
        assert_eq!(dec::<NoPayload>(&[0x81, 0xa1, b'a', 0x01]), NoPayload);
    }

    #[test]
    fn bytes_payload_is_bin_or_nil() {
        assert_eq!(enc(&BytesPayload::nil()), [0xc0]);
        assert_eq!(enc(&BytesPayload::default()), [0xc0]);
        assert_eq!(enc(&BytesPayload::new(Bytes::new())), [0xc4, 0x00]);
        assert_eq!(
            enc(&BytesPayload::from(&b"abc"[..])),
            [0xc4, 0x03, b'a', b'b', b'c']
        );
        // bin8 ends at 255 bytes; 256 takes bin16.
        let big = BytesPayload::from(vec![7u8; 256]);
        let mut want = vec![0xc5, 0x01, 0x00];
        want.extend_from_slice(&[7u8; 256]);
        assert_eq!(enc(&big), want);
        let big255 = BytesPayload::from(vec![7u8; 255]);
        assert_eq!(&enc(&big255)[..2], &[0xc4, 0xff]);

        assert_eq!(dec::<BytesPayload>(&[0xc0]), BytesPayload::nil());
        assert!(dec::<BytesPayload>(&[0xc0]).is_nil());
        assert_eq!(
            dec::<BytesPayload>(&[0xc4, 0x00]),
            BytesPayload::new(Bytes::new())
        );
        assert!(!dec::<BytesPayload>(&[0xc4, 0x00]).is_nil());
        assert_eq!(
            dec::<BytesPayload>(&[0xc4, 0x03, b'a', b'b', b'c']).as_slice(),
            b"abc"
        );
        assert_eq!(dec::<BytesPayload>(&want).as_slice(), &[7u8; 256]);
        assert!(BytesPayload::decode(&[0x01]).is_err());
        assert!(BytesPayload::decode(&[]).is_err());
    }

    #[test]
    fn bytes_payload_also_reads_a_str_as_go_does() {
        // Go's msgp reads bytes from a str as well as from a bin.
        assert_eq!(
            dec::<BytesPayload>(&[0xa3, b'a', b'b', b'c']).as_slice(),
            b"abc"
        );
        let owned: BytesPayload = rmp_serde::from_read(&[0xc4, 0x02, b'h', b'i'][..]).unwrap();
        assert_eq!(owned.as_slice(), b"hi");
        assert!(BytesPayload::from(None::<Bytes>).is_nil());
        assert_eq!(
            BytesPayload::from(Some(Bytes::from_static(b"x"))).as_slice(),
            b"x"
        );
        assert_eq!(
            BytesPayload::from(Bytes::from_static(b"y")).as_slice(),
            b"y"
        );
    }

    #[test]
    fn map_helpers_read_and_replace() {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), "2".to_owned());
        m.insert("a".to_owned(), "1".to_owned());
        let mss = Mss::from(m);
        assert_eq!(mss.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(Mss::default().iter().count(), 0);

        let mut v = UrlValues::from(BTreeMap::from([(
            "k".to_owned(),
            vec!["x".to_owned(), "y".to_owned()],
        )]));
        v.set("k", "z");
        assert_eq!(v.get_all("k"), ["z"]);
        v.set("new", "n");
        assert_eq!(v.get("new"), Some("n"));

        let j = Json::new(7u32);
        assert_eq!(j.get(), Some(&7));
        assert_eq!(j.into_inner(), Some(7));
        assert_eq!(Json::<u32>::nil().get(), None);
    }

    #[test]
    fn mss_is_map_or_nil() {
        assert_eq!(enc(&Mss::default()), [0xc0]);
        assert_eq!(enc(&Mss::new()), [0x80]);
        let m = Mss::from_iter([("c", "d"), ("a", "b")]);
        // Sorted keys.
        assert_eq!(
            enc(&m),
            [0x82, 0xa1, b'a', 0xa1, b'b', 0xa1, b'c', 0xa1, b'd']
        );
        let mut one = Mss::default();
        assert_eq!(one.insert("key", ""), None);
        assert_eq!(enc(&one), [0x81, 0xa3, b'k', b'e', b'y', 0xa0]);

        assert!(dec::<Mss>(&[0xc0]).is_nil());
        let empty = dec::<Mss>(&[0x80]);
        assert!(!empty.is_nil() && empty.is_empty());
        let m2 = dec::<Mss>(&[0x82, 0xa1, b'c', 0xa1, b'd', 0xa1, b'a', 0xa1, b'b']);
        assert_eq!(m2, m);
        assert_eq!(m2.get("c"), Some("d"));
        // map16 form, as a Go peer may send for big maps, decodes the same.
        assert_eq!(
            dec::<Mss>(&[0xde, 0x00, 0x01, 0xa1, b'a', 0xa1, b'b']).get("a"),
            Some("b")
        );
        assert!(
            Mss::decode(&[0x81, 0xa1, b'a', 0x01]).is_err(),
            "values are strings"
        );
    }

    #[test]
    fn url_values_is_map_of_arrays_never_nil() {
        assert_eq!(enc(&UrlValues::new()), [0x80]);
        let mut v = UrlValues::new();
        v.add("b", "x");
        v.add("b", "y");
        v.0.insert("a".into(), Vec::new());
        assert_eq!(
            enc(&v),
            [
                0x82, 0xa1, b'a', 0x90, 0xa1, b'b', 0x92, 0xa1, b'x', 0xa1, b'y'
            ]
        );
        assert_eq!(
            dec::<UrlValues>(&[
                0x82, 0xa1, b'a', 0x90, 0xa1, b'b', 0x92, 0xa1, b'x', 0xa1, b'y'
            ]),
            v
        );
        assert_eq!(v.get("b"), Some("x"));
        assert_eq!(v.get_all("b"), ["x", "y"]);
        assert_eq!(v.get("a"), None);
        // Nil maps and nil value arrays decode as empty.
        assert_eq!(dec::<UrlValues>(&[0xc0]), UrlValues::new());
        assert_eq!(dec::<UrlValues>(&[0x80]), UrlValues::new());
        let nil_value = dec::<UrlValues>(&[0x81, 0xa1, b'a', 0xc0]);
        assert_eq!(nil_value.get_all("a"), Vec::<String>::new());
        assert!(nil_value.0.contains_key("a"));
    }

    #[test]
    fn json_is_bin_with_newline_or_nil() {
        assert_eq!(enc(&Json::<u32>::nil()), [0xc0]);
        assert_eq!(enc(&Json::<u32>::default()), [0xc0]);
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), 1);
        assert_eq!(enc(&Json::new(m.clone())), b"\xc4\x08{\"a\":1}\n");
        assert_eq!(enc(&Json::new(5u8)), b"\xc4\x025\n");
        assert_eq!(enc(&Json::new(String::new())), b"\xc4\x03\"\"\n");
        // Go's encoder escapes HTML characters and the JS line separators.
        assert_eq!(
            enc(&Json::new("<a&b>\u{2028}\u{2029}é".to_owned())),
            b"\xc4\x25\"\\u003ca\\u0026b\\u003e\\u2028\\u2029\xc3\xa9\"\n"
        );

        assert_eq!(dec::<Json<u32>>(&[0xc0]), Json::nil());
        assert_eq!(
            dec::<Json<BTreeMap<String, i32>>>(b"\xc4\x08{\"a\":1}\n"),
            Json::new(m)
        );
        // Go's escapes, and text without the newline, decode too.
        assert_eq!(
            dec::<Json<String>>(b"\xc4\x0f\"\\u003ca\\u003e\""),
            Json::new("<a>".to_owned())
        );
        let err = Json::<u32>::decode(b"\xc4\x04\"x\"\n").unwrap_err();
        assert!(err.message().contains("invalid type"), "{err}");
        assert!(Json::<u32>::decode(&[0x01]).is_err(), "not a bin");
    }

    /// A MinIO-style msgp struct: a map keyed by the Go field names.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct TestRequest {
        #[serde(rename = "Num")]
        num: i64,
        #[serde(rename = "String")]
        string: String,
    }

    #[test]
    fn structs_are_maps_by_field_name_or_tuples() {
        let r = TestRequest {
            num: 1,
            string: "hi".into(),
        };
        let named = [
            0x82, 0xa3, b'N', b'u', b'm', 0x01, 0xa6, b'S', b't', b'r', b'i', b'n', b'g', 0xa2,
            b'h', b'i',
        ];
        assert_eq!(enc(&r), named);
        let tuple = [0x92, 0x01, 0xa2, b'h', b'i'];
        assert_eq!(
            enc(&Tuple(TestRequest {
                num: 1,
                string: "hi".into()
            })),
            tuple
        );
        // Either form decodes either way.
        assert_eq!(dec::<TestRequest>(&named), r);
        assert_eq!(dec::<TestRequest>(&tuple), r);
        assert_eq!(dec::<Tuple<TestRequest>>(&named).into_inner(), r);
        // Go's msgp writes a non-negative int above 127 as int16 (0xd1): it decodes.
        let go = [
            0x82, 0xa3, b'N', b'u', b'm', 0xd1, 0x01, 0x2c, 0xa6, b'S', b't', b'r', b'i', b'n',
            b'g', 0xa0,
        ];
        assert_eq!(
            dec::<TestRequest>(&go),
            TestRequest {
                num: 300,
                string: String::new()
            }
        );
        // Trailing bytes are ignored, as Go's typed layer does.
        let mut trailing = named.to_vec();
        trailing.push(0xc0);
        assert_eq!(dec::<TestRequest>(&trailing), r);
        // A missing field is a decode error naming it.
        let err = TestRequest::decode(&[0x81, 0xa3, b'N', b'u', b'm', 0x01]).unwrap_err();
        assert!(err.message().contains("String"), "{err}");
    }

    /// The helpers nested as struct fields keep their forms.
    #[test]
    fn helpers_as_fields() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Outer {
            #[serde(rename = "B")]
            b: BytesPayload,
            #[serde(rename = "M")]
            m: Mss,
            #[serde(rename = "U")]
            u: UrlValues,
            #[serde(rename = "J")]
            j: Json<bool>,
        }
        let o = Outer {
            b: BytesPayload::nil(),
            m: Mss::default(),
            u: UrlValues::new(),
            j: Json::new(true),
        };
        let want = [
            0x84, 0xa1, b'B', 0xc0, 0xa1, b'M', 0xc0, 0xa1, b'U', 0x80, 0xa1, b'J', 0xc4, 0x05,
            b't', b'r', b'u', b'e', b'\n',
        ];
        assert_eq!(enc(&o), want);
        assert_eq!(dec::<Outer>(&want), o);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(TestRequest::decode(&[]).is_err());
        assert!(TestRequest::decode(&[0xc1]).is_err());
        assert!(String::decode(&[0x01]).is_err());
        assert!(u8::decode(&[0xcd, 0x01, 0x00]).is_err(), "out of range");
    }
}
