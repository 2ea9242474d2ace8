/** BiFlow-J cli. */
package dev.biflow.cli;
