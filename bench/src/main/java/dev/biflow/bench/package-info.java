/** BiFlow-J bench. */
package dev.biflow.bench;
