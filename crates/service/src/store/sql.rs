//! One small SQL surface over the two engines: SQLite (one process, the default) and
//! PostgreSQL (several nodes sharing one job store).
//!
//! Table files write their SQL once, with SQLite's numbered parameters (`?1`, `?2`), and
//! run it through a [`Db`]: one open transaction on either engine. PostgreSQL gets the
//! same text with `$1`, `$2`. Values cross as [`Value`]s and rows come back as [`Row`]s
//! of them, so no table file names an engine's types. The few places where the dialects
//! differ ask [`Db::engine`] (or use [`Db::skip_locked`]) and say why.
//!
//! Portable SQL, as the table files use it: `INSERT ... ON CONFLICT (...) DO UPDATE SET
//! x = excluded.x` rather than `INSERT OR REPLACE`; `ON CONFLICT DO NOTHING` rather than
//! `INSERT OR IGNORE`; `RETURNING id` rather than `last_insert_rowid()`; `CASE` rather
//! than the two-argument `min`/`max` (PostgreSQL's `LEAST`/`GREATEST`); sums cast to
//! `BIGINT` (PostgreSQL sums integers into `numeric`); a subquery in `FROM` has an alias.

use postgres::error::SqlState;
use postgres::types::{IsNull, ToSql, Type};

use super::{Error, Result};

/// Which engine a [`Db`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// One SQL value: what the store's tables hold (integers, reals, text, NULL).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// Turns a Rust value into a [`Value`]; see [`args!`](crate::store::args).
pub trait ToValue {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_value!(i64, i32, u32, u16, u64, bool);

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for std::borrow::Cow<'_, str> {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The parameters of one statement: `args![a, b, c]` is `&[Value]`.
#[macro_export]
#[doc(hidden)]
macro_rules! store_args {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::sql::ToValue::to_value(&$x)),*][..]
    };
}
pub use store_args as args;

/// Reads a Rust value back from a [`Value`]; `None` when the type does not fit.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    Value::Int(n) => <$t>::try_from(*n).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
int_from_value!(i64, u32, u16, u64);

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).map(|n| n != 0)
    }
}

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Real(x) => Some(*x),
            Value::Int(n) => Some(*n as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One row of a query's answer.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `index` as a `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self.0.get(index).unwrap_or(&Value::Null);
        T::from_value(value).ok_or_else(|| Error::Column {
            index,
            found: format!("{value:?}"),
            wanted: std::any::type_name::<T>(),
        })
    }
}

/// One open transaction on either engine; the store commits it when the call returns `Ok`.
pub enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(postgres::Transaction<'a>),
}

impl Db<'_> {
    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// What a claiming `SELECT` ends with: on PostgreSQL it locks the rows it picks and
    /// passes over rows another node's transaction holds; SQLite has one writer at a time.
    pub fn skip_locked(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Runs a statement that returns no rows; returns how many rows it changed.
    pub fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64> {
        match self {
            Db::Sqlite(db) => {
                let mut stmt = db.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(args))? as u64)
            }
            Db::Postgres(tx) => Ok(tx.execute(&dollars(sql), &pg_args(args))?),
        }
    }

    /// Runs a query (or a statement with `RETURNING`) and collects its rows.
    pub fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(db) => {
                let mut stmt = db.prepare_cached(sql)?;
                let columns = stmt.column_count();
                let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let values = (0..columns)
                        .map(|i| row.get_ref(i).map(sqlite_value))
                        .collect::<rusqlite::Result<_>>()?;
                    out.push(Row(values));
                }
                Ok(out)
            }
            Db::Postgres(tx) => {
                let rows = tx.query(&dollars(sql), &pg_args(args))?;
                rows.iter().map(pg_row).collect()
            }
        }
    }

    /// The first row of a query, if any.
    pub fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row of a query that always answers one (an aggregate).
    pub fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row> {
        self.query_opt(sql, args)?.ok_or(Error::NoRow)
    }

    /// Runs several statements without parameters (a migration).
    pub fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(db) => Ok(db.execute_batch(sql)?),
            Db::Postgres(tx) => Ok(tx.batch_execute(sql)?),
        }
    }
}

/// Whether an error is a unique constraint refusing a row (another node got there first).
pub fn is_conflict(err: &Error) -> bool {
    match err {
        Error::Postgres(e) => e.code() == Some(&SqlState::UNIQUE_VIOLATION),
        Error::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
            e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        }
        _ => false,
    }
}

/// SQLite's `?1` parameters as PostgreSQL's `$1` (outside quoted text).
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        let numbered = chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if c == '?' && !quoted && numbered {
            '$'
        } else {
            c
        });
    }
    out
}

fn pg_args(args: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn sqlite_value(value: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into()),
    }
}

fn pg_row(row: &postgres::Row) -> Result<Row> {
    let values = row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let ty = column.type_();
            let value = if *ty == Type::INT8 {
                row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
            } else if *ty == Type::INT4 {
                row.try_get::<_, Option<i32>>(i)?
                    .map(|n| Value::Int(n.into()))
            } else if *ty == Type::INT2 {
                row.try_get::<_, Option<i16>>(i)?
                    .map(|n| Value::Int(n.into()))
            } else if *ty == Type::BOOL {
                row.try_get::<_, Option<bool>>(i)?
                    .map(|b| Value::Int(b.into()))
            } else if *ty == Type::FLOAT8 {
                row.try_get::<_, Option<f64>>(i)?.map(Value::Real)
            } else if *ty == Type::FLOAT4 {
                row.try_get::<_, Option<f32>>(i)?
                    .map(|x| Value::Real(x.into()))
            } else {
                row.try_get::<_, Option<String>>(i)?.map(Value::Text)
            };
            Ok(value.unwrap_or(Value::Null))
        })
        .collect::<Result<_>>()?;
    Ok(Row(values))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(*n),
            Value::Real(x) => ValueRef::Real(*x),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

/// PostgreSQL infers each parameter's type from the statement; a value is written as
/// whatever type the server asked for, when it fits.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) if *ty == Type::INT8 => n.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            Value::Int(n) if *ty == Type::FLOAT8 => (*n as f64).to_sql(ty, out),
            Value::Int(n) => n.to_string().to_sql(ty, out),
            Value::Real(x) if *ty == Type::FLOAT4 => (*x as f32).to_sql(ty, out),
            Value::Real(x) => x.to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollars_outside_quoted_text() {
        assert_eq!(
            dollars("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12 OR c = ?"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12 OR c = ?"
        );
    }

    #[test]
    fn values_read_back_as_their_types_or_name_the_column() {
        let row = Row(vec![Value::Int(3), Value::Null, Value::Text("a".into())]);
        assert_eq!(row.get::<u32>(0).unwrap(), 3);
        assert_eq!(row.get::<f64>(0).unwrap(), 3.0);
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(row.get::<String>(2).unwrap(), "a");
        let err = row.get::<i64>(2).unwrap_err().to_string();
        assert!(err.contains("column 2"), "{err}");
    }
}
