//! Analysis conditions: the small expressions a metric's `success_condition` and
//! `failure_condition` are written in, over the measured value `result`.
//!
//! ```text
//! result >= 0.95
//! result < 2000 && result > 0
//! (result <= 0.01) || result == 0
//! ```
//!
//! The grammar, whole:
//!
//! ```text
//! condition  := or
//! or         := and ( "||" and )*
//! and        := unary ( "&&" unary )*
//! unary      := "!" unary | "(" condition ")" | comparison
//! comparison := operand op operand
//! operand    := "result" | number            (number: 12, 0.95, -3, 1e3)
//! op         := ">=" | "<=" | ">" | "<" | "==" | "!="
//! ```
//!
//! A dozen lines of grammar need no expression crate; what they cannot say (functions,
//! several values) an analysis does not need, since every metric measures one number.
//! Parsing happens when a manifest is read, so a typo is an error with its column, not
//! a failed rollout later.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed condition, kept with its text (it serializes as the text).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, Op, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Operand {
    Result,
    Number(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

/// Why a condition does not parse, and where (a 1-based column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{text}`, column {column}: {message}")]
pub struct ConditionError {
    pub text: String,
    pub column: usize,
    pub message: String,
}

impl Eq for Condition {}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let mut p = Parser { text, pos: 0 };
        let expr = p.or()?;
        p.skip_space();
        if p.pos < text.len() {
            return Err(p.error("expected `&&`, `||` or the end"));
        }
        Ok(Condition {
            text: text.to_string(),
            expr,
        })
    }

    /// Whether the condition holds for the measured value.
    pub fn holds(&self, result: f64) -> bool {
        eval(&self.expr, result)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn eval(e: &Expr, result: f64) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, result) || eval(b, result),
        Expr::And(a, b) => eval(a, result) && eval(b, result),
        Expr::Not(a) => !eval(a, result),
        Expr::Cmp(l, op, r) => {
            let v = |o: &Operand| match o {
                Operand::Result => result,
                Operand::Number(n) => *n,
            };
            let (l, r) = (v(l), v(r));
            match op {
                Op::Ge => l >= r,
                Op::Le => l <= r,
                Op::Gt => l > r,
                Op::Lt => l < r,
                Op::Eq => l == r,
                Op::Ne => l != r,
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> ConditionError {
        ConditionError {
            text: self.text.to_string(),
            column: self.pos + 1,
            message: message.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    /// Consumes `token` if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        self.skip_space();
        if self.rest().starts_with("!=") {
            return Err(self.error("expected `result`, a number, `!` or `(`"));
        }
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let left = self.operand()?;
        let op = self.op()?;
        let right = self.operand()?;
        if left == Operand::Result && right == Operand::Result
            || matches!((left, right), (Operand::Number(_), Operand::Number(_)))
        {
            return Err(ConditionError {
                message: "a comparison needs `result` on exactly one side".into(),
                ..self.error("")
            });
        }
        Ok(Expr::Cmp(left, op, right))
    }

    fn op(&mut self) -> Result<Op, ConditionError> {
        for (token, op) in [
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">", Op::Gt),
            ("<", Op::Lt),
        ] {
            if self.eat(token) {
                return Ok(op);
            }
        }
        Err(self.error("expected one of >=, <=, >, <, ==, !="))
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        if self.eat("result") {
            return Ok(Operand::Result);
        }
        self.skip_space();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(self.rest().len());
        let number = &self.rest()[..len];
        match number.parse::<f64>() {
            Ok(n) if !number.is_empty() && n.is_finite() => {
                self.pos += len;
                Ok(Operand::Number(n))
            }
            _ => Err(self.error("expected `result` or a number")),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Condition {
    type Err = ConditionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::parse(s)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Condition::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(text: &str, result: f64) -> bool {
        Condition::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .holds(result)
    }

    #[test]
    fn comparisons_either_way_round() {
        assert!(holds("result >= 0.95", 0.95));
        assert!(!holds("result >= 0.95", 0.9499));
        assert!(holds("0.95 <= result", 0.96));
        assert!(holds("result < 2000", 1999.0));
        assert!(!holds("result > 2000", 2000.0));
        assert!(holds("result == 0", 0.0));
        assert!(holds("result != 0", 1.0));
        assert!(holds("result>-1e3", -999.0));
    }

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_and_not_group() {
        // result < 1 || (result > 5 && result < 10)
        let c = "result < 1 || result > 5 && result < 10";
        assert!(holds(c, 0.5));
        assert!(holds(c, 7.0));
        assert!(!holds(c, 3.0));
        assert!(!holds(c, 11.0));
        let grouped = "(result < 1 || result > 5) && result < 10";
        assert!(!holds(grouped, 11.0));
        assert!(holds(grouped, 0.0));
        assert!(holds("!(result > 1)", 0.5));
        assert!(!holds("! result > 1", 2.0));
    }

    #[test]
    fn mistakes_are_refused_with_their_column() {
        for (text, column, says) in [
            ("result >= ", 11, "expected `result` or a number"),
            ("results >= 1", 7, "expected one of"),
            ("result => 1", 8, "expected one of"),
            (
                "result >= 1 and result < 2",
                13,
                "expected `&&`, `||` or the end",
            ),
            ("(result > 1", 12, "expected `)`"),
            ("1 < 2", 6, "exactly one side"),
            ("result == result", 17, "exactly one side"),
            ("", 1, "expected `result` or a number"),
        ] {
            let e = Condition::parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_condition_round_trips_as_its_text() {
        let c: Condition = serde_json::from_str(r#""result >= 0.95""#).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), r#""result >= 0.95""#);
        assert!(serde_json::from_str::<Condition>(r#""result >>= 1""#).is_err());
    }
}
