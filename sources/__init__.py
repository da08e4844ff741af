"""The edge where records come in. Every source yields `RawRecord`s; the DAG never knows which one ran."""
