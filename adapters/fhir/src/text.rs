//! Text helpers: the XHTML narrative reduced to plain paragraphs, and values shown in
//! errors only when they cannot be patient data.

/// A code-like value (a Bundle type, an event code, a resource type) shown in an error,
/// or a neutral phrase when it does not look like a code (it could then be misplaced
/// patient data, and errors reach logs, responses and the audit log).
pub(crate) fn shown_code(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':' | b'/'))
    {
        format!("`{value}`")
    } else {
        format!("(a value of {} characters)", value.chars().count())
    }
}

/// A bad time shown in an error, only when it looks like one.
pub(crate) fn shown_time(value: &str) -> String {
    if !value.is_empty()
        && value.len() <= 40
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b':' | b'T' | b'Z'))
    {
        format!("`{value}`")
    } else {
        format!("(a value of {} characters)", value.chars().count())
    }
}

/// What an XHTML tag (the text between `<` and `>`) does to the text around it.
enum TagEffect {
    /// Ends a paragraph (`p`, `div`, `br`, `li`, `tr`, headings …).
    Break,
    /// Separates cells of a table row.
    Space,
    /// Nothing (`span`, `b`, `a` …).
    None,
}

fn tag_effect(tag: &str) -> TagEffect {
    let name = tag
        .trim_start_matches('/')
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match name.as_str() {
        "p" | "div" | "br" | "li" | "tr" | "ul" | "ol" | "table" | "thead" | "tbody" | "tfoot"
        | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "dt" | "dd" | "dl" | "pre" | "blockquote"
        | "hr" | "caption" => TagEffect::Break,
        "td" | "th" => TagEffect::Space,
        _ => TagEffect::None,
    }
}

/// The character an XHTML entity (without `&` and `;`) stands for.
fn entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)?
        }
    })
}

/// Collects the text of paragraphs, collapsing white space.
struct Paragraphs {
    done: Vec<String>,
    current: String,
    pending_space: bool,
}

impl Paragraphs {
    fn push(&mut self, c: char) {
        if c.is_whitespace() && c != '\u{3000}' {
            self.pending_space = !self.current.is_empty();
            return;
        }
        if self.pending_space {
            self.current.push(' ');
            self.pending_space = false;
        }
        self.current.push(c);
    }

    /// Text without markup: runs between white space are copied whole.
    fn push_str(&mut self, text: &str) {
        let mut rest = text;
        while let Some((at, space)) = rest
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() && c != '\u{3000}')
        {
            self.push_run(&rest[..at]);
            self.pending_space = !self.current.is_empty();
            rest = &rest[at + space.len_utf8()..];
        }
        self.push_run(rest);
    }

    fn push_run(&mut self, run: &str) {
        if run.is_empty() {
            return;
        }
        if self.pending_space {
            self.current.push(' ');
            self.pending_space = false;
        }
        self.current.push_str(run);
    }

    fn end(&mut self) {
        self.pending_space = false;
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }
}

/// The narrative `div` (XHTML) as plain paragraphs: tags dropped, entities decoded,
/// white space collapsed, one string per paragraph (`p`, `br`, `li`, `tr`, …).
pub(crate) fn narrative(div: &str) -> Vec<String> {
    let mut out = Paragraphs {
        done: Vec::new(),
        current: String::new(),
        pending_space: false,
    };
    let mut rest = div;
    while let Some(at) = rest.find(['<', '&']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").unwrap_or(after.len());
            out.push_str(&after[..end]);
            rest = after.get(end + 3..).unwrap_or("");
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').unwrap_or(after.len());
            let tag = &after[..end];
            match tag_effect(tag) {
                TagEffect::Break => out.end(),
                TagEffect::Space => out.push(' '),
                TagEffect::None => {}
            }
            rest = after.get(end + 1..).unwrap_or("");
        } else {
            // `&`: an entity up to `;` (a bare `&` is kept as it is).
            // Entities are short: look no further than a few characters for the `;`.
            let decoded = rest[1..]
                .char_indices()
                .take(12)
                .find(|&(_, c)| c == ';')
                .and_then(|(end, _)| entity(&rest[1..=end]).map(|c| (c, end + 2)));
            match decoded {
                Some((c, len)) => {
                    out.push(c);
                    rest = &rest[len..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out.end();
    out.done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrative_keeps_paragraphs_and_drops_markup() {
        let div = "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>移動：屋内は歩行器で見守り、\n   屋外は車いす</p>\
                   <p>食事：自立<br/>減塩食 6g/日</p><!-- <p>hidden</p> --><p>A &amp; B &lt;3&gt; &#x6B69;&#27497; &bogus; &</p>\
                   <table><tr><td>排泄</td><td>自立</td></tr></table></div>";
        assert_eq!(
            narrative(div),
            [
                "移動：屋内は歩行器で見守り、 屋外は車いす",
                "食事：自立",
                "減塩食 6g/日",
                "A & B <3> 歩歩 &bogus; &",
                "排泄 自立",
            ]
        );
    }

    #[test]
    fn cut_markup_never_panics() {
        for div in [
            "<p",
            "<!-- x",
            "&#x",
            "<![CDATA[abc",
            "a&",
            "&#xD800;",
            "<t",
            "<",
        ] {
            let _ = narrative(div);
        }
        assert_eq!(narrative("<![CDATA[a<b]]>c"), ["a<bc"]);
    }

    #[test]
    fn only_code_like_values_are_shown() {
        assert_eq!(shown_code("searchset"), "`searchset`");
        assert_eq!(shown_code("架空 花子"), "(a value of 5 characters)");
        assert_eq!(shown_time("2025-04-10T09:00"), "`2025-04-10T09:00`");
        assert_eq!(shown_time("1938年"), "(a value of 5 characters)");
    }
}
