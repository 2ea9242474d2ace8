// An indexed list of child modules (torch.nn.ModuleList): children named "0", "1", ...
package dev.biflow.engine.nn;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;

/** Holds modules under names "0", "1", ...; has no forward of its own. */
public class ModuleList<M extends Module> extends Module implements Iterable<M> {
    private final List<M> items = new ArrayList<>();

    public ModuleList() {}

    public ModuleList(List<? extends M> modules) { for (M m : modules) add(m); }

    /** Appends m as child "size()"; returns this. */
    public ModuleList<M> add(M m) {
        registerModule(Integer.toString(items.size()), m);
        items.add(m);
        return this;
    }

    public M get(int i) {
        if (i < 0 || i >= items.size())
            throw new IndexOutOfBoundsException("ModuleList index " + i + " out of range [0, " + items.size() + ")");
        return items.get(i);
    }

    public int size() { return items.size(); }

    public List<M> asList() { return Collections.unmodifiableList(items); }

    @Override
    public Iterator<M> iterator() { return asList().iterator(); }
}
