// The one exception every reader in this package throws for bytes that do not form a valid, supported file.
package dev.biflow.engine.io;

import java.io.IOException;

/**
 * Thrown when a file's content is malformed, truncated, or uses a feature these readers do not
 * support. The message names the source (path, or a label for in-memory bytes), the problem, and
 * what to do about it.
 *
 * <p>It is an {@link IOException} because a bad file is an I/O-level condition the caller has
 * to expect (a truncated download, the wrong file passed). The readers promise that arbitrary
 * bytes produce either a result or this exception, never an unchecked one; this is fuzzed.
 * Other {@code IOException}s from the same methods are real I/O failures (missing file, disk error).
 */
public class CorruptFileException extends IOException {
    private static final long serialVersionUID = 1L;

    private final String source;
    private final String problem;

    public CorruptFileException(String source, String problem) {
        super(source + ": " + problem);
        this.source = source;
        this.problem = problem;
    }

    public CorruptFileException(String source, String problem, Throwable cause) {
        super(source + ": " + problem, cause);
        this.source = source;
        this.problem = problem;
    }

    /** The path or label of the bad input. */
    public String source() { return source; }

    /** The message without the source prefix. */
    public String problem() { return problem; }
}
