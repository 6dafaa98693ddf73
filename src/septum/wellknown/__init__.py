"""Protocol facts the engine and the datapath both speak: reserved identity numbers and ICMP
type names. Standard library only, importing nothing of Septum: the bottom of every layer, so
that each fact is written once and neither side has to import the other."""
