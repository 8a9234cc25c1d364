package pgoutbox.kafka;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;

import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.*;
import java.util.regex.Pattern;

/**
 * The test's side of Kafka (test/kafka/run.sh):
 *
 *   wait-broker BOOTSTRAP SECONDS        exit 0 once the broker answers
 *   consume BOOTSTRAP REGEX OUT STOPFILE  read every topic matching REGEX from the beginning and
 *                                        append one JSON line per record to OUT (topic, partition,
 *                                        offset, key, headers, value) until STOPFILE exists
 *   count OUT REGEX                      distinct ids (header "id") seen in topics matching REGEX
 *   check OUT EXPECTED PREFIX [STRIP]    EXPECTED: one JSON line per committed event (outbox.history
 *                                        rows: id, pos, seq, channel, key, type, payload) that must
 *                                        arrive in topic PREFIX + channel; prints the result and the
 *                                        duplicates, exit 1 on any failed assertion
 *   config FILE KEY=VALUE...             the connector file (README's configuration) with the
 *                                        connection settings of this test put in its "config"
 *   offset JSON KEY=VALUE...             Connect's GET /connectors/NAME/offsets answer with KEY set
 *                                        to VALUE (a number if it is one) in each partition's offset: the body
 *                                        of a PATCH of the offsets
 *   bench BOOTSTRAP TOPIC N SECONDS      consume TOPIC from the beginning until N distinct ids are
 *                                        seen; prints the epoch milliseconds of the last one
 */
public final class Check {
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "wait-broker" -> System.exit(waitBroker(args[1], Integer.parseInt(args[2])));
            case "consume" -> consume(args[1], args[2], Path.of(args[3]), Path.of(args[4]));
            case "count" -> System.out.println(count(Path.of(args[1]), Pattern.compile(args[2])));
            case "check" -> System.exit(check(Path.of(args[1]), Path.of(args[2]), args[3],
                    args.length > 4 && args[4].equals("strip-nulls")));
            case "config" -> System.out.println(config(Path.of(args[1]), Arrays.copyOfRange(args, 2, args.length)));
            case "offset" -> System.out.println(offset(args[1], Arrays.copyOfRange(args, 2, args.length)));
            case "bench" -> bench(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]));
            default -> { System.err.println("unknown command " + args[0]); System.exit(2); }
        }
    }

    static String config(Path file, String[] overrides) throws IOException {
        JsonNode root = JSON.readTree(file.toFile());
        ObjectNode cfg = (ObjectNode) root.get("config");
        for (String o : overrides) {
            int eq = o.indexOf('=');
            cfg.put(o.substring(0, eq), o.substring(eq + 1));
        }
        return JSON.writeValueAsString(root);
    }

    static String offset(String offsets, String[] sets) throws IOException {
        JsonNode root = JSON.readTree(offsets);
        if (root.path("offsets").isEmpty()) throw new IllegalArgumentException("no offsets in " + offsets);
        for (JsonNode e : root.get("offsets")) {
            ObjectNode off = (ObjectNode) e.get("offset");
            for (String o : sets) {
                int eq = o.indexOf('=');
                String k = o.substring(0, eq), v = o.substring(eq + 1);
                if (v.matches("-?[0-9]+")) off.put(k, Long.parseLong(v)); else off.put(k, v);
            }
        }
        return JSON.writeValueAsString(root);
    }

    static int waitBroker(String bootstrap, int seconds) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        long deadline = System.currentTimeMillis() + seconds * 1000L;
        while (System.currentTimeMillis() < deadline) {
            try (Admin admin = Admin.create(p)) {
                admin.describeCluster().nodes().get();
                return 0;
            } catch (Exception e) {
                try { Thread.sleep(500); } catch (InterruptedException ie) { return 1; }
            }
        }
        return 1;
    }

    static Properties consumerProps(String bootstrap, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "1000"); // new topics are found within a second
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, String.valueOf(8 << 20));
        p.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, String.valueOf(16 << 20));
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return p;
    }

    static void consume(String bootstrap, String regex, Path out, Path stop) throws IOException {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(bootstrap, "pg-outbox-test-" + UUID.randomUUID()));
             BufferedWriter w = Files.newBufferedWriter(out, StandardCharsets.UTF_8,
                     StandardOpenOption.CREATE, StandardOpenOption.APPEND)) {
            c.subscribe(Pattern.compile(regex));
            int idle = 0;
            while (true) {
                ConsumerRecords<String, String> recs = c.poll(Duration.ofMillis(500));
                for (ConsumerRecord<String, String> r : recs) {
                    ObjectNode o = JSON.createObjectNode();
                    o.put("t", r.topic()).put("p", r.partition()).put("o", r.offset());
                    o.put("k", r.key());
                    ObjectNode h = o.putObject("h");
                    for (Header hd : r.headers())
                        h.put(hd.key(), hd.value() == null ? null : new String(hd.value(), StandardCharsets.UTF_8));
                    o.put("v", r.value());
                    w.write(JSON.writeValueAsString(o));
                    w.write('\n');
                }
                w.flush();
                // Stop only after STOPFILE exists and two polls in a row returned nothing.
                idle = recs.isEmpty() ? idle + 1 : 0;
                if (idle >= 2 && Files.exists(stop)) break;
            }
        }
    }

    static List<JsonNode> readLines(Path f) throws IOException {
        List<JsonNode> l = new ArrayList<>();
        if (!Files.exists(f)) return l;
        try (BufferedReader r = Files.newBufferedReader(f, StandardCharsets.UTF_8)) {
            String s;
            while ((s = r.readLine()) != null) if (!s.isBlank()) l.add(JSON.readTree(s));
        }
        return l;
    }

    static String header(JsonNode rec, String name) {
        JsonNode h = rec.path("h").get(name);
        return h == null || h.isNull() ? null : h.asText();
    }

    static long count(Path out, Pattern topics) throws IOException {
        Set<String> ids = new HashSet<>();
        for (JsonNode r : readLines(out))
            if (topics.matcher(r.get("t").asText()).matches() && header(r, "id") != null) ids.add(header(r, "id"));
        return ids.size();
    }

    /** JSON equality where numbers compare by value (12.5 == 12.50, 3 == 3.0). */
    static boolean same(JsonNode a, JsonNode b) {
        if (a == null || b == null) return a == b;
        if (a.isNumber() && b.isNumber()) return a.decimalValue().compareTo(b.decimalValue()) == 0;
        if (a.isObject() && b.isObject()) {
            if (a.size() != b.size()) return false;
            for (Iterator<String> it = a.fieldNames(); it.hasNext(); ) {
                String f = it.next();
                if (!b.has(f) || !same(a.get(f), b.get(f))) return false;
            }
            return true;
        }
        if (a.isArray() && b.isArray()) {
            if (a.size() != b.size()) return false;
            for (int i = 0; i < a.size(); i++) if (!same(a.get(i), b.get(i))) return false;
            return true;
        }
        return a.equals(b);
    }

    /** The JSON without its null-valued object fields, recursively. */
    static JsonNode stripNulls(JsonNode n) {
        if (n == null) return null;
        if (n.isObject()) {
            ObjectNode o = JSON.createObjectNode();
            n.fields().forEachRemaining(e -> { if (!e.getValue().isNull()) o.set(e.getKey(), stripNulls(e.getValue())); });
            return o;
        }
        if (n.isArray()) {
            var a = JSON.createArrayNode();
            n.forEach(x -> a.add(stripNulls(x)));
            return a;
        }
        return n;
    }

    static int check(Path out, Path expected, String prefix, boolean strip) throws IOException {
        List<String> failures = new ArrayList<>();
        Map<String, JsonNode> want = new LinkedHashMap<>();
        for (JsonNode e : readLines(expected)) want.put(e.get("id").asText(), e);
        List<JsonNode> recs = new ArrayList<>();
        for (JsonNode r : readLines(out)) if (r.get("t").asText().startsWith(prefix)) recs.add(r);
        // Kafka's order is per partition: sort by (topic, partition, offset).
        recs.sort(Comparator.comparing((JsonNode r) -> r.get("t").asText())
                .thenComparingInt(r -> r.get("p").asInt()).thenComparingLong(r -> r.get("o").asLong()));
        Map<String, Integer> seen = new HashMap<>();
        Map<String, Long> lastPosPerKey = new HashMap<>();
        Map<String, Integer> partitionOfKey = new HashMap<>();
        int duplicates = 0, bytesChecked = 0, tombstones = 0, nullValues = 0;
        long largest = 0;
        for (JsonNode r : recs) {
            String topic = r.get("t").asText();
            String id = header(r, "id");
            String where = topic + "/" + r.get("p").asInt() + "@" + r.get("o").asLong();
            if (id == null) { failures.add(where + ": no id header"); continue; }
            JsonNode e = want.get(id);
            if (e == null) { failures.add(where + ": event id " + id + " was not committed (or not expected here): " + r); continue; }
            int n = seen.merge(id, 1, Integer::sum);
            if (n > 1) { duplicates++; continue; }  // at-least-once: later copies are only counted
            String channel = e.get("channel").asText();
            if (!topic.equals(prefix + channel))
                failures.add(where + ": event " + id + " of channel " + channel + " in topic " + topic);
            String key = e.hasNonNull("key") ? e.get("key").asText() : null;
            String gotKey = r.hasNonNull("k") ? r.get("k").asText() : null;
            if (!Objects.equals(key, gotKey))
                failures.add(where + ": event " + id + " key " + gotKey + ", expected " + key);
            for (String hn : new String[] {"pos", "seq"}) {
                String hv = header(r, hn);
                if (!e.get(hn).asText().equals(hv))
                    failures.add(where + ": event " + id + " header " + hn + "=" + hv + ", expected " + e.get(hn).asText());
            }
            JsonNode payload = e.get("payload");
            // an event without payload: a record whose value is the JSON text null, or a tombstone
            if (!r.hasNonNull("v")) {  // README: the value is the JSON text null, never a tombstone
                tombstones++;
                failures.add(where + ": event " + id + " arrived as a tombstone (null value)");
            }
            JsonNode got = r.hasNonNull("v") ? JSON.readTree(r.get("v").asText()) : null;
            if (got != null && got.isNull()) { nullValues++; got = null; }
            JsonNode wantPayload = payload == null || payload.isNull() ? null : (strip ? stripNulls(payload) : payload);
            if (!same(wantPayload, got))
                failures.add(where + ": event " + id + " value " + abbrev(r.path("v").asText()) + ", expected " + abbrev(String.valueOf(wantPayload)));
            else if (got != null) {
                bytesChecked += r.get("v").asText().length();
                largest = Math.max(largest, r.get("v").asText().length());
            }
            // pos order per key: the first copy of each event, in partition order, has increasing pos.
            if (key != null) {
                String kk = topic + "\u0000" + key;
                Integer part = partitionOfKey.putIfAbsent(kk, r.get("p").asInt());
                if (part != null && part != r.get("p").asInt())
                    failures.add(where + ": key " + key + " in two partitions (" + part + ", " + r.get("p").asInt() + ")");
                long pos = e.get("pos").asLong();
                Long last = lastPosPerKey.put(kk, pos);
                if (last != null && last >= pos)
                    failures.add(where + ": key " + key + ": pos " + pos + " after pos " + last);
            }
        }
        int missing = 0;
        for (String id : want.keySet())
            if (!seen.containsKey(id)) {
                if (missing++ < 10) failures.add("event " + id + " (" + abbrev(want.get(id).toString()) + ") never arrived");
            }
        if (missing > 10) failures.add("... " + missing + " events never arrived in all");
        System.out.printf("%s*: %d records, %d distinct events of %d committed, %d duplicates, %d missing, largest value %d bytes, "
                        + "%d values 'null', %d tombstones%n",
                prefix, recs.size(), seen.size(), want.size(), duplicates, missing, largest, nullValues, tombstones);
        for (String f : failures.subList(0, Math.min(failures.size(), 30))) System.out.println("  FAIL " + f);
        if (failures.size() > 30) System.out.println("  ... " + failures.size() + " failures in all");
        return failures.isEmpty() ? 0 : 1;
    }

    static String abbrev(String s) {
        return s == null || s.length() <= 200 ? s : s.substring(0, 200) + "...(" + s.length() + " chars)";
    }

    static void bench(String bootstrap, String topic, int n, int seconds) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(bootstrap, "pg-outbox-bench-" + UUID.randomUUID()))) {
            c.subscribe(List.of(topic));
            Set<String> ids = new HashSet<>(n * 2);
            long deadline = System.currentTimeMillis() + seconds * 1000L;
            while (ids.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    Header h = r.headers().lastHeader("id");
                    if (h != null) ids.add(new String(h.value(), StandardCharsets.UTF_8));
                }
            }
            System.out.println(ids.size() + " " + System.currentTimeMillis());
        }
    }
}
