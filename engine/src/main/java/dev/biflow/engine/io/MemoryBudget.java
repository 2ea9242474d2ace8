// How much memory a reader may allocate for one file: a share of the Java heap, checked before decoding.
package dev.biflow.engine.io;

import java.util.Locale;

/**
 * A reader asks here before it allocates the arrays a file's header declares (float expansion
 * included), so a small file that declares, or decompresses to, more than the heap holds is
 * refused with a one-line {@link InputTooLargeException} instead of an OutOfMemoryError.
 *
 * <p>The budget is {@value #HEAP_SHARE_PERCENT}% of the heap's maximum ({@link Runtime#maxMemory()}),
 * or the bytes in the system property {@value #PROPERTY} (e.g. {@code -Dbiflow.memory.budget=64m}),
 * which tests use to probe the limits without a small heap.
 */
public final class MemoryBudget {
    private MemoryBudget() {}

    /** System property: the budget in bytes (suffix k, m or g allowed). */
    public static final String PROPERTY = "biflow.memory.budget";
    public static final int HEAP_SHARE_PERCENT = 75;

    /** The bytes one file (or one request) may allocate. */
    public static long limit() {
        String p = System.getProperty(PROPERTY);
        if (p != null && !p.isBlank()) {
            try {
                return parseSize(p);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("-D" + PROPERTY + "=" + p + " is not a size in bytes (e.g. 512m, 2g)");
            }
        }
        return Runtime.getRuntime().maxMemory() / 100 * HEAP_SHARE_PERCENT;
    }

    static long parseSize(String s) {
        s = s.strip().toLowerCase(Locale.ROOT);
        long mul = 1;
        char c = s.charAt(s.length() - 1);
        if (c == 'k' || c == 'm' || c == 'g') {
            mul = c == 'k' ? 1L << 10 : c == 'm' ? 1L << 20 : 1L << 30;
            s = s.substring(0, s.length() - 1);
        }
        long v = Long.parseLong(s);
        if (v < 0) throw new NumberFormatException(s);
        return Math.multiplyHigh(v, mul) != 0 ? Long.MAX_VALUE : v * mul;
    }

    /** Whether {@code bytes} fit the budget. */
    public static boolean fits(long bytes) { return bytes >= 0 && bytes <= limit(); }

    /**
     * Throws an {@link InputTooLargeException} for {@code source} if {@code bytes} (what {@code what}
     * needs) exceed the budget; the message gives both numbers and the -Xmx setting that would do.
     */
    public static void check(String source, String what, long bytes) throws InputTooLargeException {
        if (!fits(bytes)) throw new InputTooLargeException(source, tooLarge(what, bytes));
    }

    /** "X needs N, more than the M budget ...; give Java more memory: ..." (one line). */
    public static String tooLarge(String what, long bytes) {
        long limit = limit();
        String of = System.getProperty(PROPERTY) != null && !System.getProperty(PROPERTY).isBlank()
                ? "the " + size(limit) + " budget set by -D" + PROPERTY
                : "the " + size(limit) + " a file may take (" + HEAP_SHARE_PERCENT + "% of the " + size(Runtime.getRuntime().maxMemory()) + " Java heap)";
        return what + " needs " + (bytes < 0 ? "more than 2^63 bytes" : size(bytes)) + ", more than " + of
                + "; " + (bytes < 0 || bytes > (1L << 40) ? "the file's sizes are implausible (is it damaged?)" : "give Java more memory: " + xmxHint(bytes));
    }

    /** "BIFLOW_JAVA_OPTS=-Xmx8g ./biflow ... (or java -Xmx8g ...)" for a need of {@code bytes}. */
    public static String xmxHint(long bytes) {
        long gb = Math.max(1, (long) Math.ceil(bytes * 100.0 / HEAP_SHARE_PERCENT * 1.25 / (1L << 30)));
        return "BIFLOW_JAVA_OPTS=-Xmx" + gb + "g ./biflow ... (java -Xmx" + gb + "g)";
    }

    /** Bytes in B/KB/MB/GB (binary units), one decimal. */
    public static String size(long bytes) {
        if (bytes < 1024) return bytes + " B";
        String[] u = {"KB", "MB", "GB", "TB", "PB", "EB"};
        double v = bytes;
        int i = -1;
        while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
        return String.format(Locale.ROOT, "%.1f %s", v, u[i]);
    }
}
