//! A small JSON writer for records sent to JavaScript. Stored values are
//! already JSON text, so they are spliced in as they are instead of being
//! parsed and printed again.

/// Builds one JSON object.
pub struct JsonObject {
    buf: String,
    first: bool,
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonObject {
    /// Starts `{`.
    pub fn new() -> Self {
        JsonObject {
            buf: String::from("{"),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        self.buf.push('"');
        self.buf.push_str(k); // keys are our own identifiers, never user text
        self.buf.push_str("\":");
    }

    /// A string field (`null` when `None`).
    pub fn str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        push_str(&mut self.buf, v);
        self
    }

    /// A field whose value is JSON text already (`null` when `None`).
    pub fn raw(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        self.buf.push_str(v.unwrap_or("null"));
        self
    }

    /// An integer field.
    pub fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        self.buf.push_str(&v.to_string());
        self
    }

    /// Closes `}` and returns the text.
    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// Appends `v` as a JSON string (or `null`).
pub fn push_str(buf: &mut String, v: Option<&str>) {
    match v {
        None => buf.push_str("null"),
        Some(s) => {
            // serde_json's escaping is exact and cannot fail for a &str.
            let quoted = serde_json::to_string(s).unwrap_or_else(|_| "null".into());
            buf.push_str(&quoted);
        }
    }
}

/// Joins JSON texts into an array.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut out = String::from("[");
    for (i, it) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&it);
    }
    out.push(']');
    out
}
