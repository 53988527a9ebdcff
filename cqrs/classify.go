package cqrs

import (
	"strings"
	"sync"
	"sync/atomic"
)

// readOnly reports whether sql is known to be a single read-only statement,
// so that a replica can run it. It is conservative: whatever it cannot
// tell for sure is not read-only, and goes to the primary.
//
// Leading whitespace and comments (-- and nested /* */) are skipped. The
// statement must start with SELECT, WITH, VALUES, SHOW or TABLE, and must
// contain none of the words INSERT, UPDATE, DELETE, MERGE, INTO (SELECT
// INTO creates a table), FOR SHARE or FOR KEY SHARE (FOR [NO KEY] UPDATE
// is caught by UPDATE), nor a call of a function known to write or to need
// the primary (nextval, setval, advisory locks, ...: see writeFuncs).
// Words are looked for outside string constants, quoted identifiers,
// dollar-quoted strings and comments, so that a keyword in a literal does
// not count; a quoted identifier is still checked against the function
// names. A string constant holding a backslash (whose end depends on
// standard_conforming_strings), a U&"..." identifier, anything
// unterminated, and a second statement after a ';' make the statement
// unknown.
func readOnly(sql string) bool {
	const (
		start   = iota // before the first word
		inStmt         // after a read-only first word
		stmtEnd        // after a ';'
	)
	state := start
	prevFor := false // the previous token was the word FOR
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case isSpace(c):
			i++
			continue
		case c == '-' && i+1 < n && sql[i+1] == '-':
			i += 2
			for i < n && sql[i] != '\n' && sql[i] != '\r' {
				i++
			}
			continue
		case c == '/' && i+1 < n && sql[i+1] == '*':
			depth := 1
			i += 2
			for depth > 0 {
				if i+1 >= n {
					return false // unterminated comment
				}
				switch {
				case sql[i] == '/' && sql[i+1] == '*':
					depth++
					i += 2
				case sql[i] == '*' && sql[i+1] == '/':
					depth--
					i += 2
				default:
					i++
				}
			}
			continue
		}
		// A token other than a comment.
		if state == stmtEnd {
			return false // a second statement
		}
		wasFor := prevFor
		prevFor = false
		switch {
		case isIdentStart(c):
			j := i + 1
			for j < n && isIdentCont(sql[j]) {
				j++
			}
			w := sql[i:j]
			if j-i == 1 && (c == 'e' || c == 'E') && j < n && sql[j] == '\'' {
				// E'...': backslash escapes.
				k, ok := skipEscapeString(sql, j+1)
				if !ok || state == start {
					return false
				}
				i = k
				continue
			}
			if state == start {
				if !isReadStart(w) {
					return false
				}
				state = inStmt
			} else if isWriteWord(w) || (wasFor && (equalFold(w, "share") || equalFold(w, "key"))) {
				return false
			}
			prevFor = equalFold(w, "for")
			i = j
		case c == '\'':
			j := i + 1
			for {
				k := strings.IndexAny(sql[j:], `'\`)
				if k < 0 || sql[j+k] == '\\' {
					return false // unterminated, or a backslash whose meaning depends on a setting
				}
				j += k + 1
				if j < n && sql[j] == '\'' { // '' stands for '
					j++
					continue
				}
				break
			}
			if state == start {
				return false
			}
			i = j
		case c == '"':
			if i > 0 && sql[i-1] == '&' {
				return false // U&"..." may spell a name with escapes
			}
			j := i + 1
			for {
				k := strings.IndexByte(sql[j:], '"')
				if k < 0 {
					return false
				}
				j += k + 1
				if j < n && sql[j] == '"' {
					j++
					continue
				}
				break
			}
			// "nextval"('s') calls nextval: check quoted names against
			// the functions (not the keywords: a column may be "update").
			if state == start || isWriteFunc(sql[i+1:j-1]) {
				return false
			}
			i = j
		case c == '$':
			j := i + 1
			if j < n && isDigit(sql[j]) { // a parameter, $1
				for j < n && isDigit(sql[j]) {
					j++
				}
				i = j
				break
			}
			for j < n && (isIdentStart(sql[j]) || isDigit(sql[j])) { // a dollar quote's tag
				j++
			}
			if j >= n || sql[j] != '$' {
				return false // not a dollar quote: unknown
			}
			tag := sql[i : j+1]
			k := strings.Index(sql[j+1:], tag)
			if k < 0 || state == start {
				return false
			}
			i = j + 1 + k + len(tag)
		case c == ';':
			if state == start {
				return false
			}
			state = stmtEnd
			i++
		default:
			if state == start {
				return false
			}
			i++ // a number, an operator or punctuation
		}
	}
	return state != start
}

// skipEscapeString returns the index just past the E'...' string constant
// whose body starts at i.
func skipEscapeString(sql string, i int) (int, bool) {
	for i < len(sql) {
		switch sql[i] {
		case '\\':
			i += 2
		case '\'':
			if i+1 < len(sql) && sql[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1, true
		default:
			i++
		}
	}
	return 0, false
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart and isIdentCont follow PostgreSQL's lexer: bytes from 0x80
// up are letters, and $ may continue an identifier.
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// equalFold is strings.EqualFold for an ASCII lower-case want.
func equalFold(s, want string) bool {
	if len(s) != len(want) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// hasPrefixFold is strings.HasPrefix, ASCII case-insensitive, for a
// lower-case prefix.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && equalFold(s[:len(prefix)], prefix)
}

func isReadStart(w string) bool {
	switch len(w) {
	case 4:
		return equalFold(w, "with") || equalFold(w, "show")
	case 5:
		return equalFold(w, "table")
	case 6:
		return equalFold(w, "select") || equalFold(w, "values")
	}
	return false
}

// writeWords are the keywords that make a statement a write (or make it
// take row locks, which a replica refuses).
var writeWords = [...]string{"insert", "update", "delete", "merge", "into"}

// writeFuncs are the functions that write, take locks or assign a
// transaction id, none of which a replica can do; writeFuncPrefixes are
// families of them. Both also hold the functions that act on the server
// they run on, which must not run on whichever replica is next: a
// replication slot created, advanced or drained on a standby instead of
// the primary, a pid of the primary's signalled on an unrelated session,
// statistics reset or configuration reloaded on the wrong server, a backup
// started there, a standby promoted (pg_promote) or its replay paused.
//
// The families, for the package documentation: sequences (nextval, setval,
// currval, lastval); notifications and transaction ids (pg_notify,
// txid_current, pg_current_xact_id); large objects (lo_creat, lo_create,
// lo_import, lo_unlink, lo_from_bytea, lo_put, lo_truncate, lowrite);
// index maintenance (brin_summarize_*, brin_desummarize_range,
// gin_clean_pending_list); pg_import_system_collations; WAL and
// replication (pg_logical_emit_message, pg_switch_wal, pg_current_wal*,
// pg_create_* (slots, restore points), pg_drop_replication_slot,
// pg_copy_*_replication_slot, pg_replication_slot_advance,
// pg_logical_slot_*, pg_replication_origin_*, pg_wal_replay_*, pg_promote,
// pg_log_standby_snapshot); server control (pg_terminate_backend,
// pg_cancel_backend, pg_reload_conf, pg_rotate_logfile,
// pg_log_backend_memory_contexts, pg_stat_reset*, pg_backup_start,
// pg_backup_stop, pg_start_backup, pg_stop_backup); advisory locks
// (pg_advisory_*, pg_try_advisory_*); dblink*.
var (
	writeFuncs = [...]string{
		"nextval", "setval", "currval", "lastval",
		"pg_notify", "txid_current", "pg_current_xact_id",
		"lo_creat", "lo_create", "lo_import", "lo_unlink", "lo_from_bytea", "lo_put",
		"lo_truncate", "lo_truncate64", "lowrite",
		"brin_desummarize_range", "gin_clean_pending_list", "pg_import_system_collations",
		"pg_logical_emit_message", "pg_switch_wal", "pg_log_standby_snapshot",
		"pg_drop_replication_slot", "pg_replication_slot_advance",
		"pg_promote", // on a replica, it would promote it
		"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
		"pg_log_backend_memory_contexts",
		"pg_backup_start", "pg_backup_stop", "pg_start_backup", "pg_stop_backup",
	}
	writeFuncPrefixes = [...]string{
		"pg_advisory_", "pg_try_advisory_", "pg_current_wal", "dblink",
		"pg_wal_replay_", "pg_replication_origin_",
		"brin_summarize_", "pg_create_", "pg_copy_", "pg_logical_slot_", "pg_stat_reset",
	}
)

func isWriteWord(w string) bool {
	for _, k := range writeWords {
		if equalFold(w, k) {
			return true
		}
	}
	return isWriteFunc(w)
}

func isWriteFunc(w string) bool {
	for _, f := range writeFuncs {
		if equalFold(w, f) {
			return true
		}
	}
	for _, p := range writeFuncPrefixes {
		if hasPrefixFold(w, p) {
			return true
		}
	}
	return false
}

// Bounds of a DB's classification cache: it holds at most about
// maxCachedBytes of SQL text (each entry costing its length plus
// cacheEntryCost), and is emptied when full. A statement longer than
// maxCachedSQL is classified at each call instead.
const (
	maxCachedBytes = 1 << 20
	maxCachedSQL   = 16 << 10
	cacheEntryCost = 64
)

// stmtCache remembers readOnly's answer per SQL text. A hit costs one
// lock-free map lookup and allocates nothing; sqlc's statements are
// constants, so after warm-up every call is a hit.
type stmtCache struct {
	m    sync.Map // string -> bool
	size atomic.Int64
}

func (c *stmtCache) readOnly(sql string) bool {
	if v, ok := c.m.Load(sql); ok {
		return v.(bool)
	}
	ro := readOnly(sql)
	if len(sql) > maxCachedSQL {
		return ro
	}
	if _, loaded := c.m.LoadOrStore(sql, ro); !loaded {
		if c.size.Add(int64(len(sql)+cacheEntryCost)) > maxCachedBytes {
			c.m.Clear()
			c.size.Store(0)
		}
	}
	return ro
}
