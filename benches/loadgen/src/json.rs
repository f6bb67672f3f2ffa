//! One flat JSON object, written by hand: the report of a run.

pub struct Json {
    fields: Vec<(String, String)>,
}

impl Json {
    pub fn new() -> Self {
        Json { fields: Vec::new() }
    }

    pub fn str(&mut self, k: &str, v: &str) {
        let mut s = String::from("\"");
        for ch in v.chars() {
            match ch {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                c => s.push(c),
            }
        }
        s.push('"');
        self.fields.push((k.into(), s));
    }

    pub fn num(&mut self, k: &str, v: f64) {
        let s = if !v.is_finite() {
            "null".to_string()
        } else if v.fract() == 0.0 && v.abs() < 1e15 {
            format!("{}", v as i64)
        } else {
            format!("{v:.4}")
        };
        self.fields.push((k.into(), s));
    }

    pub fn opt(&mut self, k: &str, v: Option<f64>) {
        match v {
            Some(v) => self.num(k, v),
            None => self.fields.push((k.into(), "null".into())),
        }
    }

    /// An array of numbers (null for None).
    pub fn list(&mut self, k: &str, v: &[Option<f64>]) {
        let mut one = Json::new();
        let items: Vec<String> = v
            .iter()
            .map(|x| {
                one.fields.clear();
                one.opt("", *x);
                one.fields[0].1.clone()
            })
            .collect();
        self.fields
            .push((k.into(), format!("[{}]", items.join(","))));
    }

    pub fn render(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}
