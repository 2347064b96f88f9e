/// One result row. Its values were copied out of the libpq result, so it outlives it freely.
public struct PostgresRow: Sendable {
    public let columns: [String]
    /// Text-format values; nil is SQL NULL.
    let values: [String?]
    private let columnIndex: [String: Int]  // shared by all rows of a result (copy-on-write)

    init(columns: [String], columnIndex: [String: Int], values: [String?]) {
        self.columns = columns
        self.columnIndex = columnIndex
        self.values = values
    }

    public func decode<T: PostgresDecodable>(_ index: Int, as: T.Type = T.self) throws -> T {
        guard values.indices.contains(index) else {
            throw PostgresError.decode("column index \(index) out of range; the row has \(values.count) columns")
        }
        return try T(postgresCell: PostgresCell(column: columns[index], text: values[index]))
    }

    /// By column name; with duplicate names the first one wins.
    public func decode<T: PostgresDecodable>(_ column: String, as: T.Type = T.self) throws -> T {
        guard let index = columnIndex[column] else {
            throw PostgresError.decode("no column \"\(column)\" in the row; columns: \(columns)")
        }
        return try decode(index, as: T.self)
    }

    /// Out-of-range indexes count as NULL.
    public func isNull(_ index: Int) -> Bool {
        !values.indices.contains(index) || values[index] == nil
    }

    public func isNull(_ column: String) -> Bool {
        columnIndex[column].map(isNull) ?? true
    }
}

public struct PostgresQueryResult: Sendable {
    public let rows: [PostgresRow]
    /// From the command tag: rows inserted/updated/deleted/selected; 0 when the command reports none.
    public let affectedRows: Int
    /// The server's command tag, e.g. `INSERT 0 1`, `UPDATE 3`, `COMMIT`, `ROLLBACK`.
    public let commandTag: String

    public init(rows: [PostgresRow], affectedRows: Int, commandTag: String) {
        self.rows = rows
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }
}
