//! Just enough XML for XDF's stream headers and footers: elements, text and the five predefined
//! entities (and numeric character references). No attributes are needed (XDF headers have none;
//! any present are skipped), no namespaces, no DTDs.

/// An element: its name, its text (concatenated character data directly inside it) and children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The trimmed text of the child at `path` (`["info", "name"]` is `<info><name>`).
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        let mut e = self;
        for p in path {
            e = e.child(p)?;
        }
        Some(e.text.trim())
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').ok_or_else(|| format!("an unterminated entity near {:?}", &rest[i..]))?;
        let entity = &rest[i + 1..i + end];
        match entity {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|d| d.parse().ok())
                };
                out.push(code.and_then(char::from_u32).ok_or_else(|| format!("an unknown entity &{entity};"))?);
            }
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a document and returns its root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if !text.is_empty() {
            let top = stack.last_mut().expect("the document node is never popped");
            top.text.push_str(&unescape(text)?);
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<?") {
            rest = &after[after.find("?>").ok_or("an unterminated <? … ?>")? + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").ok_or("an unterminated comment")? + 3..];
        } else if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").ok_or("an unterminated CDATA section")?;
            stack.last_mut().expect("document node").text.push_str(&after[..end]);
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<!") {
            rest = &after[after.find('>').ok_or("an unterminated <! … >")? + 1..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("an unterminated closing tag")?;
            let name = after[..end].trim();
            let done = stack.pop().expect("document node");
            if done.name != name || stack.is_empty() {
                return Err(format!("</{name}> closes <{}>", done.name));
            }
            stack.last_mut().expect("parent").children.push(done);
            rest = &after[end + 1..];
        } else {
            let end = rest.find('>').ok_or("an unterminated tag")?;
            let tag = &rest[1..end];
            let (tag, empty) = match tag.strip_suffix('/') {
                Some(t) => (t, true),
                None => (tag, false),
            };
            let name = tag.split_whitespace().next().ok_or("an empty tag name")?.to_string();
            let element = Element { name, ..Element::default() };
            if empty {
                stack.last_mut().expect("parent").children.push(element);
            } else {
                stack.push(element);
            }
            rest = &rest[end + 1..];
        }
    }
    if stack.len() != 1 {
        return Err(format!("<{}> is never closed", stack.last().map(|e| e.name.as_str()).unwrap_or("")));
    }
    let mut document = stack.pop().expect("document node");
    if document.children.len() != 1 {
        return Err(format!("a document needs one root element, found {}", document.children.len()));
    }
    Ok(document.children.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_header() {
        let e = parse(
            "<?xml version=\"1.0\"?>\n<info><name>Bio &amp; Semi</name><type>EEG</type><desc><channels>\
             <channel><label>Fp1</label><unit>microvolts</unit></channel><channel><label>Fp2</label><unit/></channel>\
             </channels></desc><!-- note --><empty attr=\"x\"/></info>",
        )
        .unwrap();
        assert_eq!(e.name, "info");
        assert_eq!(e.text_at(&["name"]), Some("Bio & Semi"));
        let chans: Vec<&Element> =
            e.child("desc").unwrap().child("channels").unwrap().children_named("channel").collect();
        assert_eq!(chans.len(), 2);
        assert_eq!(chans[1].text_at(&["label"]), Some("Fp2"));
        assert_eq!(chans[1].text_at(&["unit"]), Some(""));
        assert!(e.child("empty").is_some());
    }

    #[test]
    fn broken_documents_say_what_is_wrong() {
        assert!(parse("<info><name>x</info>").unwrap_err().contains("</info> closes <name>"));
        assert!(parse("<info>").unwrap_err().contains("<info> is never closed"));
        assert!(parse("<a>&bogus;</a>").unwrap_err().contains("&bogus;"));
        assert_eq!(parse("<a>&#65;&#x42;</a>").unwrap().text, "AB");
    }
}
