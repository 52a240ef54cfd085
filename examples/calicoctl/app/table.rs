//! ASCII tables drawn the way calicoctl 0.22 drew them (Python's `prettytable` with its
//! defaults): `+---+` rules, one space of padding, every cell centred — odd leftovers go
//! right for odd-length text and left for even-length text, as `prettytable` does.

/// A table with a header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// Sorts the rows by one column (text order, as `sortby=` did).
    pub fn sort_by_column(&mut self, column: usize) {
        self.rows.sort_by(|a, b| a.get(column).cmp(&b.get(column)));
    }

    /// The rendered table, ending with a newline.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(self.rows.iter())
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = {
            let mut s = String::from("+");
            for w in &widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s
        };
        let line = |cells: &[String]| -> String {
            let mut s = String::from("|");
            for (cell, w) in cells.iter().zip(&widths) {
                s.push(' ');
                s.push_str(&centre(cell, *w));
                s.push_str(" |");
            }
            s
        };
        let mut out = String::new();
        out.push_str(&rule);
        out.push('\n');
        out.push_str(&line(&self.header));
        out.push('\n');
        out.push_str(&rule);
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out.push_str(&rule);
        out.push('\n');
        out
    }
}

/// `prettytable`'s centring.
fn centre(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let excess = width.saturating_sub(len);
    let (left, right) = if excess % 2 == 0 {
        (excess / 2, excess / 2)
    } else if len % 2 == 1 {
        (excess / 2, excess / 2 + 1)
    } else {
        (excess / 2 + 1, excess / 2)
    };
    format!("{}{text}{}", " ".repeat(left), " ".repeat(right))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_table_looks_like_calicoctls() {
        let mut t = Table::new(&["IPv4 CIDR", "Options"]);
        t.row(vec!["192.168.0.0/16".into(), String::new()]);
        t.row(vec!["10.20.10.0/24".into(), "ipip,nat-outgoing".into()]);
        t.sort_by_column(0);
        assert_eq!(
            t.render(),
            "+----------------+-------------------+\n\
             |   IPv4 CIDR    |      Options      |\n\
             +----------------+-------------------+\n\
             | 10.20.10.0/24  | ipip,nat-outgoing |\n\
             | 192.168.0.0/16 |                   |\n\
             +----------------+-------------------+\n"
        );
    }
}
