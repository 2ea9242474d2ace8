// A file whose declared (or decompressed) data would not fit the memory budget.
package dev.biflow.engine.io;

/**
 * Thrown, before anything large is allocated, when a file's data would need more memory than
 * {@link MemoryBudget} allows. A {@link CorruptFileException} (a size these readers do not support
 * with this heap), so every caller that handles bad files handles it; the message says how much is
 * needed, how much there is, and the -Xmx setting that would fit it.
 */
public class InputTooLargeException extends CorruptFileException {
    private static final long serialVersionUID = 1L;

    public InputTooLargeException(String source, String problem) { super(source, problem); }
}
