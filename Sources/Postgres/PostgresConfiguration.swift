import Foundation

public struct PostgresConfiguration: Sendable {
    /// `postgresql://user:pass@host:port/db?sslmode=…` (or a libpq keyword/value string), handed to libpq
    /// as is, so every libpq URI parameter (TLS, `options`, `target_session_attrs`, …) works.
    /// Parameters in the URL win over `connectTimeoutSeconds` and `applicationName`.
    public var url: String
    /// Maximum number of connections `PostgresClient` keeps open.
    public var poolSize: Int
    public var connectTimeoutSeconds: Int
    public var applicationName: String
    /// Prepare each distinct `query` statement once per connection and then only execute it, instead of
    /// having the server parse and plan it on every call. Turn off for poolers in transaction mode
    /// (PgBouncer before 1.21), which cannot keep a session's prepared statements.
    public var preparedStatements: Bool
    /// Prepared statements kept per connection; the least recently used one is deallocated beyond that.
    var statementCacheCapacity = 256

    public init(
        url: String, poolSize: Int = 4, connectTimeoutSeconds: Int = 5, applicationName: String = "order-service",
        preparedStatements: Bool = true
    ) {
        self.url = url
        self.poolSize = poolSize
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.applicationName = applicationName
        self.preparedStatements = preparedStatements
    }

    /// `url` with every password replaced by `***`; safe to log.
    public var redactedURL: String { ConnectionString.redact(url) }
}

/// Finds passwords in the two connection-string syntaxes libpq accepts, so they can be hidden.
enum ConnectionString {
    static func redact(_ conninfo: String) -> String {
        var result = conninfo
        // Replace back to front so earlier ranges stay valid.
        for range in passwordRanges(in: conninfo).sorted(by: { $0.lowerBound > $1.lowerBound }) {
            result.replaceSubrange(range, with: "***")
        }
        return result
    }

    /// Replaces the connection string and its passwords (raw and percent-decoded) in `text`.
    /// Used on libpq's connect-time messages, which can echo parts of a malformed URI.
    static func scrub(_ text: String, conninfo: String) -> String {
        var text = text
        if !conninfo.isEmpty { text = text.replacingOccurrences(of: conninfo, with: redact(conninfo)) }
        var secrets: Set<String> = []
        for range in passwordRanges(in: conninfo) {
            let raw = String(conninfo[range])
            secrets.insert(raw)
            if let decoded = raw.removingPercentEncoding { secrets.insert(decoded) }
            if raw.count >= 2, raw.hasPrefix("'"), raw.hasSuffix("'") {
                let inner = raw.dropFirst().dropLast()
                secrets.insert(String(inner))
                secrets.insert(inner.replacingOccurrences(of: "\\\\(.)", with: "$1", options: .regularExpression))
            }
        }
        // Longest first so a secret that contains another is replaced whole.
        for secret in secrets.filter({ !$0.isEmpty }).sorted(by: { $0.count > $1.count }) {
            text = text.replacingOccurrences(of: secret, with: "***")
        }
        return text
    }

    static func passwordRanges(in s: String) -> [Range<String.Index>] {
        for scheme in ["postgresql://", "postgres://"] where s.hasPrefix(scheme) {
            return uriPasswordRanges(s, afterScheme: s.index(s.startIndex, offsetBy: scheme.count))
        }
        return keywordPasswordRanges(s)
    }

    private static func uriPasswordRanges(_ s: String, afterScheme: String.Index) -> [Range<String.Index>] {
        var ranges: [Range<String.Index>] = []
        var queryStart = s[afterScheme...].firstIndex(of: "?")
        // The last '@' rather than libpq's first: over-redacts odd URLs instead of leaking an unencoded
        // '@' or '/' inside a password.
        if let at = s[afterScheme...].lastIndex(of: "@") {
            if let colon = s[afterScheme..<at].firstIndex(of: ":") {
                ranges.append(s.index(after: colon)..<at)
            }
            queryStart = s[at...].firstIndex(of: "?")
        }
        if let queryStart {
            var paramStart = s.index(after: queryStart)
            while paramStart < s.endIndex {
                let paramEnd = s[paramStart...].firstIndex(of: "&") ?? s.endIndex
                if let eq = s[paramStart..<paramEnd].firstIndex(of: "="),
                    s[paramStart..<eq].removingPercentEncoding == "password"
                {
                    ranges.append(s.index(after: eq)..<paramEnd)
                }
                paramStart = paramEnd == s.endIndex ? paramEnd : s.index(after: paramEnd)
            }
        }
        return ranges
    }

    /// `host=… password=secret` or `password = 'se cr\'et'`.
    private static func keywordPasswordRanges(_ s: String) -> [Range<String.Index>] {
        var ranges: [Range<String.Index>] = []
        var i = s.startIndex
        while let found = s.range(of: "password", options: .caseInsensitive, range: i..<s.endIndex) {
            i = found.upperBound
            let atWordStart = found.lowerBound == s.startIndex || s[s.index(before: found.lowerBound)].isWhitespace
            var j = found.upperBound
            while j < s.endIndex, s[j].isWhitespace { j = s.index(after: j) }
            guard atWordStart, j < s.endIndex, s[j] == "=" else { continue }
            j = s.index(after: j)
            while j < s.endIndex, s[j].isWhitespace { j = s.index(after: j) }
            let valueStart = j
            if j < s.endIndex, s[j] == "'" {
                j = s.index(after: j)
                while j < s.endIndex, s[j] != "'" {
                    if s[j] == "\\", s.index(after: j) < s.endIndex { j = s.index(after: j) }
                    j = s.index(after: j)
                }
                if j < s.endIndex { j = s.index(after: j) }
            } else {
                while j < s.endIndex, !s[j].isWhitespace { j = s.index(after: j) }
            }
            if valueStart < j { ranges.append(valueStart..<j) }
            i = j
        }
        return ranges
    }
}
