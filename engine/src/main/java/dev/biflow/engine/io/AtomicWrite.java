// Write-to-temp-then-rename, so readers only ever see the old file or the complete new one.
package dev.biflow.engine.io;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Writes a file atomically: the content goes to a hidden temporary file in the target's
 * directory ({@code .<name>.<random>.tmp}), is flushed to disk, and is renamed over the target
 * with {@link StandardCopyOption#ATOMIC_MOVE}. If the body throws, or the process dies, the
 * target keeps its old content (or stays absent) and the temporary file is removed when the
 * JVM is still alive to do it.
 *
 * <p>On a file system without atomic rename the move falls back to a plain replace; that is
 * the only case where a reader could see a partial file. Missing parent directories are created.
 */
public final class AtomicWrite {
    private AtomicWrite() {}

    /** Produces the file's bytes. Closing the stream is allowed and does not end the write. */
    @FunctionalInterface
    public interface Body {
        void write(OutputStream out) throws IOException;
    }

    public static void write(Path target, Body body) throws IOException {
        Path abs = target.toAbsolutePath();
        if (Files.isDirectory(abs))
            throw new IOException(abs + " is a directory; give a file path to write to");
        Path dir = abs.getParent();
        Files.createDirectories(dir);
        Path tmp = tempFor(abs);
        boolean done = false;
        try {
            // CREATE_NEW rather than createTempFile: the file gets the usual umask permissions, not 0600.
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
                OutputStream raw = Channels.newOutputStream(ch);
                try (OutputStream out = new Shielded(new java.io.BufferedOutputStream(raw, 1 << 16))) {
                    body.write(out);
                }
                ch.force(true);
            }
            moveIntoPlace(tmp, abs);
            done = true;
        } finally {
            if (!done) Files.deleteIfExists(tmp);
        }
    }

    /** A fresh hidden temporary name beside {@code abs} (an absolute path), its directory created. */
    static Path tempFor(Path abs) throws IOException {
        if (Files.isDirectory(abs))
            throw new IOException(abs + " is a directory; give a file path to write to");
        Path dir = abs.getParent();
        Files.createDirectories(dir);
        return dir.resolve("." + abs.getFileName() + "." + Long.toHexString(ThreadLocalRandom.current().nextLong()) + ".tmp");
    }

    /** Renames a complete, flushed temporary file over {@code abs} (atomically where the file system can) and syncs the directory. */
    static void moveIntoPlace(Path tmp, Path abs) throws IOException {
        try {
            Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING);
        }
        syncDirectory(abs.getParent());
    }

    /** Makes the rename itself durable where the platform allows opening a directory (Linux, macOS). */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException ignored) {
            // Windows cannot open directories; the rename is still atomic, only its durability is weaker.
        }
    }

    /** Buffers writes; close() flushes but leaves the channel open so the caller can fsync it. */
    private static final class Shielded extends OutputStream {
        private final OutputStream out;
        private boolean closed;

        Shielded(OutputStream out) { this.out = out; }

        @Override public void write(int b) throws IOException { check(); out.write(b); }
        @Override public void write(byte[] b, int off, int len) throws IOException { check(); out.write(b, off, len); }
        @Override public void flush() throws IOException { if (!closed) out.flush(); }
        @Override public void close() throws IOException {
            if (!closed) {
                out.flush();
                closed = true;
            }
        }

        private void check() throws IOException {
            if (closed) throw new IOException("write after close");
        }
    }
}
