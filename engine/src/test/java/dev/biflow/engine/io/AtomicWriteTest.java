// AtomicWrite: a write that fails midway leaves the old file as it was and no temporary file behind.
package dev.biflow.engine.io;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;

class AtomicWriteTest {
    @TempDir Path dir;

    private List<Path> listing() throws IOException {
        try (var s = Files.list(dir)) {
            return s.sorted().toList();
        }
    }

    @Test
    void failureMidwayLeavesTheOldFileIntactAndNoTempFile() throws IOException {
        Path f = dir.resolve("model.safetensors");
        Safetensors.write(f, Map.of("w", Tensor.of(new float[]{1, 2, 3}, 3)), Map.of("v", "old"));
        byte[] before = Files.readAllBytes(f);
        // The body has already written 1 MB to the temporary file when it fails, as a crash or a full disk would.
        IOException boom = new IOException("disk full (simulated)");
        IOException thrown = assertThrows(IOException.class, () -> AtomicWrite.write(f, out -> {
            out.write(new byte[1 << 20]);
            out.flush();
            throw boom;
        }));
        assertSame(boom, thrown);
        assertArrayEquals(before, Files.readAllBytes(f));
        assertEquals("old", Safetensors.read(f).metadata().get("v"));
        assertEquals(List.of(f), listing());
    }

    @Test
    void runtimeFailureAlsoCleansUp() throws IOException {
        Path f = dir.resolve("grid.png");
        assertThrows(IllegalStateException.class, () -> AtomicWrite.write(f, out -> {
            out.write(42);
            throw new IllegalStateException("bug in the body");
        }));
        assertFalse(Files.exists(f));
        assertEquals(List.of(), listing());
    }

    @Test
    void successReplacesTheFileAndLeavesNoTempFile() throws IOException {
        Path f = dir.resolve("sub/dir/out.bin");
        AtomicWrite.write(f, out -> out.write(new byte[]{1, 2}));
        AtomicWrite.write(f, out -> {
            out.write(new byte[]{3, 4, 5});
            out.close(); // closing early is allowed
        });
        assertArrayEquals(new byte[]{3, 4, 5}, Files.readAllBytes(f));
        try (var s = Files.list(f.getParent())) {
            assertEquals(List.of(f), s.toList());
        }
    }

    @Test
    void refusesToReplaceADirectory() throws IOException {
        Path d = Files.createDirectory(dir.resolve("ckpt"));
        IOException e = assertThrows(IOException.class, () -> AtomicWrite.write(d, out -> out.write(1)));
        assertTrue(e.getMessage().contains("is a directory"), e.getMessage());
        assertTrue(Files.isDirectory(d));
    }
}
