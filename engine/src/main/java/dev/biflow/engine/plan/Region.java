// A rectangle of a plan's arena: rows of cols floats, ld apart, from off.
package dev.biflow.engine.plan;

/**
 * Where a plan op reads or writes: rows x cols floats, row r at {@code off + r * ld}, of the plan's arena
 * (buf 0) or of an array bound when the plan runs (buf 1, 2, ...: {@link PlanBuilder#external}, a layer run
 * on tensors reads and writes them in place). A tensor (B, T, D) is the region of B T rows of D; a column
 * slice of a wider region (one of adaLN's six chunks, say) is a region with ld greater than cols.
 */
public record Region(int buf, int off, int rows, int cols, int ld) {
    public Region {
        if (buf < 0 || off < 0 || rows < 0 || cols < 0 || ld < cols)
            throw new IllegalArgumentException("Region: buf " + buf + ", off " + off + ", rows " + rows + ", cols " + cols + ", ld " + ld
                    + ": offsets and sizes must be >= 0 and ld >= cols");
    }

    /** rows x cols floats from off, rows contiguous. */
    public static Region of(int off, int rows, int cols) { return new Region(0, off, rows, cols, cols); }

    /** Columns [c0, c0 + n) of every row. */
    public Region cols(int c0, int n) {
        if (c0 < 0 || n < 0 || c0 + n > cols)
            throw new IllegalArgumentException("Region.cols(" + c0 + ", " + n + "): outside the region's " + cols + " columns");
        return new Region(buf, off + c0, rows, n, ld);
    }

    /** The same floats seen as rows x cols (a contiguous region only: a reshape). */
    public Region as(int rows, int cols) {
        if (!contiguous() || (long) rows * cols != (long) this.rows * this.cols)
            throw new IllegalArgumentException("Region.as(" + rows + ", " + cols + "): " + this + " is not " + rows * cols + " contiguous floats");
        return new Region(buf, off, rows, cols, cols);
    }

    public boolean contiguous() { return ld == cols || rows <= 1; }

    /** Offset of row r. */
    public int row(int r) { return off + r * ld; }

    /** One past the last float the region touches. */
    public int end() { return rows == 0 ? off : off + (rows - 1) * ld + cols; }
}
