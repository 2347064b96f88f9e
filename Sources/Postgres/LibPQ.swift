internal import CLibPQ
import Foundation
import Logging

// The only file that touches libpq pointers. Each handle class owns exactly one C object and frees it
// in deinit, so every error path releases it. Handles are not thread-safe: a connection's handle is
// used only on that connection's serial queue.

/// Owns a `PGconn` (PQfinish in deinit).
final class PGConnectionHandle {
    private let conn: OpaquePointer
    /// Retained here because libpq calls back into it with an unretained pointer until PQfinish.
    private let notices: NoticeSink
    /// Set when the protocol state is unknown (e.g. a COPY we cannot drive), so the pool drops it.
    private(set) var poisoned = false
    /// nil when prepared statements are turned off.
    private var statements: StatementCache?
    /// Evicted or stale statements still to DEALLOCATE.
    private var pendingDeallocations: [String] = []
    /// Network round trips so far: each a blocking wait for the server (a pipeline is one).
    private(set) var roundTrips: UInt64 = 0
    /// An async transaction's BEGIN not sent yet (set by `PostgresConnection` for one operation):
    /// the next statement sends it first, in its round trip when it is a cached prepared statement.
    /// Taken only when a statement is about to go, so what fails before (binding, preparing, a
    /// cancel) leaves no transaction begun.
    var beginPending = false

    private init(conn: OpaquePointer, notices: NoticeSink, statementCacheCapacity: Int) {
        self.conn = conn
        self.notices = notices
        if statementCacheCapacity > 0 { statements = StatementCache(capacity: statementCacheCapacity) }
    }

    deinit { PQfinish(conn) }

    /// Blocking connect + session setup. Throws a retriable `.connection` error whose text never
    /// contains the password.
    static func open(_ config: PostgresConfiguration, logger: Logger) throws -> PGConnectionHandle {
        // Keywords before `dbname` are defaults the URL may override; those after it are forced.
        let keywords = ["connect_timeout", "application_name", "dbname", "client_encoding"]
        let values = [String(config.connectTimeoutSeconds), config.applicationName, config.url, "UTF8"]
        let raw = withCStringArray(keywords) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let raw else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        let handle = PGConnectionHandle(
            conn: raw, notices: NoticeSink(logger: logger),
            statementCacheCapacity: config.preparedStatements ? config.statementCacheCapacity : 0)
        guard PQstatus(raw) == CONNECTION_OK else {
            let reason = ConnectionString.scrub(handle.errorMessage, conninfo: config.url)
            throw PostgresError(
                kind: .connection, message: "could not connect to \(config.redactedURL): \(reason)")
        }
        PQsetNoticeReceiver(
            raw,
            { arg, result in
                guard let arg, let result else { return }
                Unmanaged<NoticeSink>.fromOpaque(arg).takeUnretainedValue().receive(result)
            }, Unmanaged.passUnretained(handle.notices).toOpaque())
        // Decoders rely on these output formats; set after connect so a URL `options=` cannot undo them.
        do {
            _ = try handle.exec("SET TIME ZONE 'UTC'; SET DateStyle TO 'ISO, MDY'; SET bytea_output TO 'hex'")
        } catch let error as PostgresError {
            throw PostgresError(
                kind: .connection, sqlState: error.sqlState,
                message: "session setup failed on \(config.redactedURL): \(error.message)")
        }
        return handle
    }

    /// Connected and in a known protocol state.
    var isUsable: Bool { !poisoned && PQstatus(conn) == CONNECTION_OK }

    var backendPID: Int32 { PQbackendPID(conn) }

    var transactionStatus: PGTransactionStatusType { PQtransactionStatus(conn) }

    var errorMessage: String {
        guard let message = PQerrorMessage(conn) else { return "unknown error" }
        let text = String(cString: message).trimmingCharacters(in: .whitespacesAndNewlines)
        return text.isEmpty ? "unknown error" : text
    }

    func makeCancelHandle() -> PGCancelHandle? {
        PQgetCancel(conn).map(PGCancelHandle.init)
    }

    /// Simple-query protocol: several statements allowed, no parameters. Returns the last result.
    func exec(_ sql: String) throws -> PostgresQueryResult {
        try Self.checkSQL(sql)
        try deallocatePending()
        if takeBeginPending() { _ = try interpret(roundTrip { PQexec(conn, "BEGIN") }) }
        return try interpret(roundTrip { PQexec(conn, sql) })
    }

    /// Clears `beginPending`; true if it was set.
    func takeBeginPending() -> Bool {
        defer { beginPending = false }
        return beginPending
    }

    /// COMMIT. A transaction whose statement failed (and whose error the caller swallowed) answers
    /// COMMIT with ROLLBACK instead of an error; report it rather than pretend the work was saved.
    func commit() throws {
        try Self.checkCommitted(try exec("COMMIT"))
    }

    private static func checkCommitted(_ commit: PostgresQueryResult) throws {
        guard commit.commandTag != "ROLLBACK" else { throw PostgresError.rolledBackAtCommit() }
    }

    /// `body` is one blocking exchange with the server: counted.
    private func roundTrip<R>(_ body: () -> R) -> R {
        roundTrips &+= 1
        return body()
    }

    private static func checkSQL(_ sql: String) throws {
        // Passed as a C string: a NUL would silently cut the statement short.
        guard !containsNUL(sql) else {
            throw PostgresError(kind: .query, message: "SQL text contains a NUL character")
        }
    }

    /// Extended protocol: exactly one statement, values bound out of band (never spliced into SQL).
    /// With the statement cache on, each distinct statement is prepared once and then only executed.
    /// `isCancelled` is checked between preparing and executing. `beginFirst` (or `beginPending`):
    /// BEGIN goes just before the statement; `commitAfter`: COMMIT goes just after it, only if it succeeded; with the
    /// statement cached, all of them in one network round trip (pipeline mode). A failed statement
    /// throws its own error and leaves its transaction open, aborted (the caller rolls back); a
    /// failed COMMIT throws COMMIT's error, and the transaction is over.
    func execParams(
        _ sql: String, _ params: [PostgresParameter], beginFirst: Bool = false, commitAfter: Bool = false,
        isCancelled: () -> Bool = { false }
    ) throws -> PostgresQueryResult {
        try Self.checkSQL(sql)
        let bound = try BoundParameters(params)
        guard statements != nil else {
            if beginFirst || takeBeginPending() { _ = try exec("BEGIN") }
            let raw = roundTrip {
                bound.withValues {
                    PQexecParams(conn, sql, bound.count, bound.types, $0, bound.lengths, bound.formats, 0)
                }
            }
            let result = try interpret(raw)
            if commitAfter { try commit() }
            return result
        }
        try deallocatePending()
        let key = StatementCache.Key(sql: sql, types: bound.types)
        var retried = false
        var begin = beginFirst
        while true {
            let name = try preparedName(for: key)
            if isCancelled() { throw CancellationError() }
            if takeBeginPending() { begin = true }
            do {
                if begin || commitAfter {
                    let first = begin
                    begin = false
                    return try interpret(try pipelined(begin: first, [(name, bound)], commit: commitAfter)[0], detectStale: true)
                }
                return try interpret(
                    roundTrip {
                        bound.withValues { PQexecPrepared(conn, name, bound.count, $0, bound.lengths, bound.formats, 0) }
                    },
                    detectStale: true)
            } catch let stale as StaleStatement {
                try drop(stale, key: key, name: name, retried: &retried)
            }
        }
    }

    /// Several statements in one network round trip (pipeline mode, one sync): for statements whose
    /// results the caller does not need before it sends the next. As `execParams` otherwise: BEGIN
    /// first (`beginFirst` or `beginPending`), COMMIT after them (`commitAfter`, only if all
    /// succeeded). Returns every statement's result, in order. The first statement that fails throws
    /// its own error; the server runs none after it (nor COMMIT), and its transaction stays open,
    /// aborted. Outside a transaction block the pipeline is one implicit transaction: a failure
    /// undoes the statements before it too. Without the statement cache (or with one smaller than
    /// the pipeline) the statements go one round trip each, and outside a transaction block each
    /// commits on its own.
    func execPipeline(
        _ statements: [(sql: String, params: [PostgresParameter])], beginFirst: Bool = false, commitAfter: Bool = false,
        isCancelled: () -> Bool = { false }
    ) throws -> [PostgresQueryResult] {
        guard statements.count > 1, let cache = self.statements, cache.capacity >= statements.count else {
            var results: [PostgresQueryResult] = []
            for (i, s) in statements.enumerated() {
                if i > 0, isCancelled() { throw CancellationError() }
                results.append(
                    try execParams(
                        s.sql, s.params, beginFirst: beginFirst && i == 0, commitAfter: commitAfter && i == statements.count - 1,
                        isCancelled: isCancelled))
            }
            return results
        }
        for s in statements { try Self.checkSQL(s.sql) }
        let bound = try statements.map { try BoundParameters($0.params) }
        let keys = zip(statements, bound).map { StatementCache.Key(sql: $0.sql, types: $1.types) }
        try deallocatePending()
        var retried = false
        var begin = beginFirst
        while true {
            // Prepared first, one round trip each the first time; the pipeline then only executes.
            // The cache holds them all (capacity checked above), so preparing one never evicts another.
            let names = try keys.map { try preparedName(for: $0) }
            if isCancelled() { throw CancellationError() }
            if takeBeginPending() { begin = true }
            let first = begin
            begin = false
            let answers = try pipelined(begin: first, Array(zip(names, bound)), commit: commitAfter)
            var results: [PostgresQueryResult] = []
            do {
                for answer in answers { results.append(try interpret(answer, detectStale: true)) }
                return results
            } catch let stale as StaleStatement {
                // The statement that failed is the one after those that succeeded.
                try drop(stale, key: keys[results.count], name: names[results.count], retried: &retried)
            }
        }
    }

    /// A cached statement the server no longer accepts: forgotten, and DEALLOCATEd later unless it
    /// is gone already. Outside a transaction block the failed attempt changed nothing (a pipeline's
    /// implicit transaction included): returns, so that the caller prepares afresh and retries, once.
    /// Inside one the transaction is aborted: throws the error, marked stale (the caller may retry
    /// the transaction).
    private func drop(_ stale: StaleStatement, key: StatementCache.Key, name: String, retried: inout Bool) throws {
        statements?.remove(key)
        if stale.error.sqlState != "26000" { pendingDeallocations.append(name) }
        guard retried || transactionStatus != PQTRANS_IDLE else {
            retried = true
            return
        }
        var error = stale.error
        error.isStaleStatement = true
        throw error
    }

    /// The prepared statements, with BEGIN before them (`begin`) and/or COMMIT after them
    /// (`commit`), sent together in pipeline mode with one sync, so that all are answered in one
    /// network round trip; returns each statement's result (error results included: they are the
    /// caller's to interpret, in order). Throws BEGIN's error if BEGIN failed, and COMMIT's (or the
    /// answered-with-ROLLBACK error) if every statement succeeded and COMMIT did not. After an error
    /// the server skips the rest up to the sync (PGRES_PIPELINE_ABORTED), so after a failed statement
    /// neither the later ones nor COMMIT run and the transaction block stays open, aborted. Every
    /// result up to the sync is read. Anything unexpected (a send that fails, results out of order or
    /// missing, the connection gone) poisons the handle: its protocol state is unknown, so the pool
    /// drops it. A connection lost after COMMIT was sent is thus a `.connection` error, as with a
    /// COMMIT of its own.
    private func pipelined(begin: Bool, _ statements: [(name: String, bound: BoundParameters)], commit: Bool) throws -> [PGResultHandle] {
        func execPrepared(_ name: String, _ bound: BoundParameters) throws -> PGResultHandle {
            guard let raw = roundTrip({ bound.withValues { PQexecPrepared(conn, name, bound.count, $0, bound.lengths, bound.formats, 0) } })
            else { throw connectionError() }
            return PGResultHandle(raw)
        }
        func succeeded(_ result: PGResultHandle) -> Bool { result.status == PGRES_COMMAND_OK || result.status == PGRES_TUPLES_OK }
        guard PQenterPipelineMode(conn) == 1 else {  // not idle: should not happen; go the plain way
            if begin { _ = try interpret(roundTrip { PQexec(conn, "BEGIN") }) }
            var results: [PGResultHandle] = []
            for (name, bound) in statements {
                let result = try execPrepared(name, bound)
                results.append(result)
                guard succeeded(result) else { return results }
            }
            if commit { try self.commit() }
            return results
        }
        var sent = !begin || PQsendQueryParams(conn, "BEGIN", 0, nil, nil, nil, nil, 0) == 1
        for (name, bound) in statements where sent {
            sent = bound.withValues { PQsendQueryPrepared(conn, name, bound.count, $0, bound.lengths, bound.formats, 0) } == 1
        }
        sent = sent && (!commit || PQsendQueryParams(conn, "COMMIT", 0, nil, nil, nil, nil, 0) == 1) && PQpipelineSync(conn) == 1
        roundTrips &+= 1
        guard sent else {
            let message = errorMessage
            poisoned = true
            throw PostgresError(kind: .connection, message: message)
        }
        // Expected: per command its result and a NULL (after an error: PGRES_PIPELINE_ABORTED for
        // the rest), then the sync marker.
        var results: [PGResultHandle] = []
        var synced = false
        var nullsInARow = 0
        while true {
            guard let raw = PQgetResult(conn) else {
                nullsInARow += 1
                if nullsInARow > 1 { break }  // nothing more is coming: the connection is gone
                continue
            }
            nullsInARow = 0
            let result = PGResultHandle(raw)
            if result.status == PGRES_PIPELINE_SYNC {
                synced = true
                break
            }
            results.append(result)
        }
        let left = PQexitPipelineMode(conn) == 1
        let expected = statements.count + (begin ? 1 : 0) + (commit ? 1 : 0)
        guard left, synced, results.count == expected else {
            let message = results.first { $0.status == PGRES_FATAL_ERROR }?.error(connectionLost: true).message ?? errorMessage
            poisoned = true
            throw PostgresError(kind: .connection, message: message)
        }
        if begin { _ = try interpret(results[0]) }
        let answers = Array(results[(begin ? 1 : 0)..<(begin ? 1 : 0) + statements.count])
        if commit, answers.allSatisfy(succeeded) {
            try Self.checkCommitted(try interpret(results[expected - 1]))
        }
        return answers
    }

    private func connectionError() -> PostgresError {
        PostgresError(kind: isUsable ? .query : .connection, message: errorMessage)
    }

    /// The cached statement for `key`, prepared (and cached) first if need be. A failed PQprepare
    /// throws and caches nothing.
    private func preparedName(for key: StatementCache.Key) throws -> String {
        if let name = statements?.name(for: key) { return name }
        if statements?.isFull == true, let evicted = statements?.evictLeastRecentlyUsed() {
            pendingDeallocations.append(evicted)
            try deallocatePending()
        }
        guard let name = statements?.makeName() else { preconditionFailure("the statement cache is off") }
        _ = try interpret(roundTrip { PQprepare(conn, name, key.sql, Int32(key.types.count), key.types) })
        statements?.insert(key, name: name)
        return name
    }

    /// DEALLOCATEs evicted and stale statements, only outside a transaction block: there a failure
    /// (say the statement is already gone) cannot abort the caller's transaction.
    private func deallocatePending() throws {
        guard !pendingDeallocations.isEmpty, transactionStatus == PQTRANS_IDLE else { return }
        while let name = pendingDeallocations.popLast() {
            do {
                _ = try interpret(roundTrip { PQexec(conn, "DEALLOCATE \(name)") })
            } catch let error as PostgresError where error.kind == .query && error.sqlState != "57014" {
                continue  // already gone: nothing to free
            } catch {
                pendingDeallocations.append(name)  // cancelled or connection trouble: report it
                throw error
            }
        }
    }

    /// `detectStale`: throw `StaleStatement` for the errors of a cached statement the server no longer
    /// accepts, so the caller can re-prepare it.
    private func interpret(_ raw: OpaquePointer?, detectStale: Bool = false) throws -> PostgresQueryResult {
        guard let raw else { throw connectionError() }  // out of memory or connection trouble before a result existed
        return try interpret(PGResultHandle(raw), detectStale: detectStale)
    }

    private func interpret(_ result: PGResultHandle, detectStale: Bool = false) throws -> PostgresQueryResult {
        switch result.status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return result.copyOut()
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR:
            let error = result.error(connectionLost: !isUsable)
            if detectStale, error.kind == .query, result.isStaleStatementError { throw StaleStatement(error: error) }
            throw error
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            poisoned = true
            throw PostgresError(kind: .query, message: "COPY is not supported; the connection will be discarded")
        default:
            poisoned = true
            throw PostgresError(
                kind: .connection, message: "unexpected libpq result status \(result.statusName)")
        }
    }
}

/// Owns a `PGresult` (PQclear in deinit). Everything is copied into Swift values before it goes away.
final class PGResultHandle {
    private let result: OpaquePointer
    private var owned = true

    init(_ result: OpaquePointer) { self.result = result }

    deinit { if owned { PQclear(result) } }

    /// Hands the result over to a new owner (another handle); this one no longer clears it.
    func release() -> OpaquePointer {
        owned = false
        return result
    }

    var status: ExecStatusType { PQresultStatus(result) }

    var statusName: String { PQresStatus(status).map { String(cString: $0) } ?? "\(status.rawValue)" }

    func field(_ code: Character) -> String? {
        PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
    }

    func error(connectionLost: Bool) -> PostgresError {
        let fallback = PQresultErrorMessage(result).map { String(cString: $0) }?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        var message = field("M") ?? fallback ?? ""
        if message.isEmpty { message = connectionLost ? "connection lost" : "unknown error" }
        return PostgresError(
            kind: connectionLost ? .connection : .query, sqlState: field("C"), message: message,
            detail: field("D"), constraint: field("n"))
    }

    /// A prepared statement's error that re-preparing cures: it was deallocated behind our back (26000,
    /// e.g. DISCARD ALL) or its result columns changed (0A000 "cached plan must not change result type").
    var isStaleStatementError: Bool {
        switch field("C") {
        case "26000": true
        case "0A000":
            field("R") == "RevalidateCachedQuery" || field("M") == "cached plan must not change result type"
        default: false
        }
    }

    func copyOut() -> PostgresQueryResult {
        let rowCount = PQntuples(result)
        let columnCount = PQnfields(result)
        let columns = (0..<columnCount).map { PQfname(result, $0).map { String(cString: $0) } ?? "" }
        var index: [String: Int] = [:]
        for (position, name) in columns.enumerated() where index[name] == nil { index[name] = position }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(Int(rowCount))
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(Int(columnCount))
            for column in 0..<columnCount {
                // Text format: NUL-terminated, UTF-8 (client_encoding is forced to UTF8).
                if PQgetisnull(result, row, column) != 0 {
                    values.append(nil)
                } else {
                    values.append(PQgetvalue(result, row, column).map { String(cString: $0) } ?? "")
                }
            }
            rows.append(PostgresRow(columns: columns, columnIndex: index, values: values))
        }
        let tag = PQcmdStatus(result).map { String(cString: $0) } ?? ""
        let affected = PQcmdTuples(result).flatMap { Int(String(cString: $0)) } ?? 0
        return PostgresQueryResult(rows: rows, affectedRows: affected, commandTag: tag)
    }
}

/// Internal to `execParams`: a cached statement must be prepared again.
private struct StaleStatement: Error {
    let error: PostgresError
}

/// Parameter values laid out as libpq's exec functions take them.
private struct BoundParameters {
    // All values in one buffer; it starts with a byte so an empty bytea still gets a non-NULL pointer.
    private var buffer: [UInt8] = [0]
    private var offsets: [Int?] = []
    private(set) var lengths: [Int32] = []
    private(set) var formats: [Int32] = []
    private(set) var types: [Oid] = []

    var count: Int32 { Int32(types.count) }

    init(_ params: [PostgresParameter]) throws {
        guard params.count <= 65535 else {  // the protocol sends the count as UInt16
            throw PostgresError(kind: .query, message: "too many parameters (\(params.count)); the limit is 65535")
        }
        offsets.reserveCapacity(params.count)
        lengths.reserveCapacity(params.count)
        formats.reserveCapacity(params.count)
        types.reserveCapacity(params.count)
        for (position, param) in params.enumerated() {
            switch param {
            case .null:
                offsets.append(nil)
                lengths.append(0)
                formats.append(0)
                types.append(0)
            case .text(let text):
                // libpq reads text parameters as C strings: a NUL would silently truncate the value.
                guard !containsNUL(text) else {
                    throw PostgresError(
                        kind: .query,
                        message: "parameter $\(position + 1) contains a NUL character, which text values cannot hold")
                }
                offsets.append(buffer.count)
                buffer.append(contentsOf: text.utf8)
                buffer.append(0)
                lengths.append(0)
                formats.append(0)
                types.append(0)  // let the server infer the type from context
            case .bytea(let bytes):
                guard bytes.count <= Int(Int32.max) else {
                    throw PostgresError(kind: .query, message: "parameter $\(position + 1) is too large")
                }
                offsets.append(buffer.count)
                buffer.append(contentsOf: bytes)
                lengths.append(Int32(bytes.count))
                formats.append(1)
                types.append(17)  // bytea
            case .byteaArray(let elements):
                let start = buffer.count
                try appendBinaryArray(of: elements, position: position)
                offsets.append(start)
                lengths.append(Int32(buffer.count - start))
                formats.append(1)
                types.append(1001)  // bytea[]
            }
        }
    }

    /// array_recv's layout, big-endian: dimensions, has-nulls flag, element type, then size and
    /// lower bound per dimension, then each element as its length (-1 for NULL) and its bytes. An
    /// empty array has no dimensions.
    private mutating func appendBinaryArray(of elements: [[UInt8]?], position: Int) throws {
        // Built only when thrown: this runs for every batch.
        func tooLarge() -> PostgresError { PostgresError(kind: .query, message: "parameter $\(position + 1) is too large") }
        guard elements.count <= Int(Int32.max) else { throw tooLarge() }
        let start = buffer.count
        append(Int32(elements.isEmpty ? 0 : 1))
        append(Int32(elements.contains(nil) ? 1 : 0))
        append(Int32(17))  // bytea
        if !elements.isEmpty {
            append(Int32(elements.count))
            append(Int32(1))
        }
        for element in elements {
            guard let element else {
                append(Int32(-1))
                continue
            }
            guard element.count <= Int(Int32.max) else { throw tooLarge() }
            append(Int32(element.count))
            buffer.append(contentsOf: element)
        }
        guard buffer.count - start <= Int(Int32.max) else { throw tooLarge() }
    }

    private mutating func append(_ value: Int32) {
        withUnsafeBytes(of: value.bigEndian) { buffer.append(contentsOf: $0) }
    }

    /// Calls `body` with a pointer per value (NULL for SQL NULL), valid only during the call.
    func withValues<R>(_ body: ([UnsafePointer<CChar>?]) -> R) -> R {
        buffer.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                let base = chars.baseAddress!
                return body(offsets.map { $0.map { base + $0 } })
            }
        }
    }
}

/// Owns a `PGcancel` (PQfreeCancel in deinit). PQcancel is documented as safe to call from any thread
/// while another thread uses the connection.
final class PGCancelHandle: @unchecked Sendable {
    private let cancel: OpaquePointer

    init(_ cancel: OpaquePointer) { self.cancel = cancel }

    deinit { PQfreeCancel(cancel) }

    /// Asks the server to cancel whatever the connection is running. Blocks briefly (opens a socket).
    @discardableResult
    func send() -> Bool {
        var errorBuffer = [CChar](repeating: 0, count: 256)
        return PQcancel(cancel, &errorBuffer, Int32(errorBuffer.count)) == 1
    }
}

/// Routes server NOTICE/WARNING messages to the logger instead of libpq's default of stderr.
final class NoticeSink: Sendable {
    let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func receive(_ result: OpaquePointer) {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let severity = field("V") ?? "NOTICE"
        let level: Logger.Level = severity == "WARNING" ? .warning : .debug
        logger.log(
            level: level, "postgres \(severity.lowercased()): \(field("M") ?? "")",
            metadata: ["sqlstate": .string(field("C") ?? "")])
    }
}

/// NUL-terminated copies of `strings` plus a terminating NULL, as libpq's keyword arrays expect.
private func withCStringArray<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { for copy in copies { free(copy) } }
    return body(copies.map { $0.map { UnsafePointer($0) } } + [nil])
}

/// A value guarded by a lock; for state touched from several threads.
final class Locked<State>: @unchecked Sendable {
    private let lock = NSLock()
    private var state: State

    init(_ state: State) { self.state = state }

    func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&state)
    }
}

/// Whether `text` holds a NUL byte; memchr over native UTF-8 (large batch parameters pass here).
func containsNUL(_ text: String) -> Bool {
    var text = text
    return text.withUTF8 { $0.count > 0 && memchr($0.baseAddress!, 0, $0.count) != nil }
}
