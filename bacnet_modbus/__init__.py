"""ilma field-bus adapters: Modbus TCP/RTU and BACnet/IP."""
